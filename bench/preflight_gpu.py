"""``wideep preflight`` on GPUs, then an expert-parallel all_to_all over NCCL, one process per GPU.

The launcher renders a DP=N external-LB ParallelDeployment (expert parallel on, preflight on) with the
planner and starts one process per GPU with exactly its pod's preflight environment (rank 0's DNS name
mapped to 127.0.0.1). Each process:

1. runs ``wideep preflight`` in-process: TCPStore rendezvous on WIDEEP_MASTER_PORT, Gloo DP group,
   vLLM's two DP collectives, config-hash check, every port released;
2. forms an NCCL group on the same master port (which the preflight has just freed, as vLLM needs);
3. runs all_to_all_single on dispatch-sized buffers, as EP dispatch does: tokens x top-k rows of
   ``hidden`` bf16 values per rank, split evenly over the ranks (DeepSeek-V3-like: hidden 7168, top-8),
   after checking one exchange element by element.

Bandwidth follows nccl-tests' all_to_all: algbw = bytes sent by one rank / time, busbw = algbw x (n-1)/n;
the time is the slowest rank's median over the timed iterations (CUDA events).

NVLink multicast stays off: NCCL_NVLS_ENABLE=0 (and TORCH_SYMM_MEM_DISABLE_MULTICAST=1,
NVSHMEM_DISABLE_NVLS=1) in every process; nothing here asks for multicast.

    python bench/preflight_gpu.py [--gpus 4] [--tokens 128,256,...] [--md out.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
os.environ.update(NO_MULTICAST)

HIDDEN = 7168
TOP_K = 8
TOKENS = (128, 256, 512, 1024, 2048, 4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------- launcher


def launch(args: argparse.Namespace) -> int:
    from devcluster import local_preflight as lg

    n = args.gpus
    port = free_port()
    obj = lg.deployment("gpu-ep", dp=n, master_port=port, timeout_seconds=int(args.timeout))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    t0 = time.monotonic()
    for i, (command, env) in enumerate(lg.pod_commands_and_envs(obj)):
        assert command == ["wideep", "preflight"], command
        full = {
            **os.environ,
            **env,
            **NO_MULTICAST,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT / "operator"), os.environ.get("PYTHONPATH")])
            ),
            "PYTHONUNBUFFERED": "1",
        }
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            if var not in env:
                full.pop(var, None)
        argv = [
            sys.executable,
            __file__,
            "--worker",
            "--gpu",
            str(i),
            "--workdir",
            str(workdir),
            "--tokens",
            args.tokens,
            "--iters",
            str(args.iters),
            "--backend",
            args.backend,
        ]
        log = open(workdir / f"pod-{i}.log", "wb")  # noqa: SIM115
        procs.append((subprocess.Popen(argv, env=full, stdout=log, stderr=subprocess.STDOUT), log))
    rcs = []
    for proc, log in procs:
        try:
            rcs.append(proc.wait(timeout=args.timeout + 240))
        except subprocess.TimeoutExpired:
            proc.kill()
            rcs.append(proc.wait())
        log.close()
    wall = time.monotonic() - t0
    for i in range(n):
        text = (workdir / f"pod-{i}.log").read_text(errors="replace")
        print(f"----- pod {i} (rc {rcs[i]})")
        print("\n".join(line for line in text.splitlines() if not line.startswith("[Gloo]")))
    if any(rcs):
        print(f"FAILED: exit codes {rcs}")
        return 1
    results = json.loads((workdir / "rank0.json").read_text())
    reports = [json.loads((workdir / f"preflight-{i}.json").read_text()) for i in range(n)]
    results["wall_s"] = wall
    results["master_port"] = port
    ranks = [r for rep in reports for r in rep["ranks"]]
    results["preflight"] = {
        "torch_import_s": [rep["torch_import_seconds"] for rep in reports],
        "arrival_spread_s": max(r["arrived_at"] for r in ranks) - min(r["arrived_at"] for r in ranks),
        "rendezvous_s": max(r["collectives_at"] for r in ranks) - max(r["arrived_at"] for r in ranks),
        "rank0_all_joined_s": reports[0]["ranks"][0]["verdict_at"] - reports[0]["ranks"][0]["arrived_at"],
        "total_s": [rep["ended_at"] - rep["started_at"] for rep in reports],
        "port_free": reports[0]["port_free"],
        "open_sockets": [rep["open_sockets"] for rep in reports],
    }
    md = render_markdown(results)
    print(md)
    if args.md:
        Path(args.md).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def render_markdown(r: dict[str, Any]) -> str:
    p = r["preflight"]
    lines = [
        "# wideep preflight on GPUs: rendezvous and expert-parallel all_to_all",
        "",
        f"Device: {r['n']} x {r['device']} ({r['topology']}), driver {r['driver']}, torch {r['torch']}, "
        f"NCCL {r['nccl']}, CUDA {r['cuda']}. NCCL_NVLS_ENABLE=0 (no NVLink multicast).",
        "",
        f"Command: `python bench/preflight_gpu.py --gpus {r['n']}`: {r['n']} processes, one per GPU, each "
        f"started with the environment the planner renders for its pod (DP={r['n']} external LB, expert "
        "parallel, preflight on; rank 0's DNS name mapped to 127.0.0.1).",
        "",
        "## Rendezvous (`wideep preflight`: TCPStore + Gloo DP group + vLLM's DP collectives)",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| torch import per process (median) | {statistics.median(p['torch_import_s']):.2f} |",
        f"| arrival spread at the store (first to last rank) | {p['arrival_spread_s']:.3f} |",
        f"| rendezvous: last arrival to every rank through Gloo group + all_reduce MAX int32 + MIN int64 "
        f"| {p['rendezvous_s']:.3f} |",
        f"| rank 0: its arrival to 'all {r['n']} ranks joined' | {p['rank0_all_joined_s']:.3f} |",
        f"| whole preflight per process, torch import included (max) | {max(p['total_s']):.2f} |",
        f"| NCCL group on the freed master port: init_process_group + first all_reduce | {r['nccl_init_s']:.3f} |",
        "",
        f"Master port {r['master_port']} free again after the preflight: {p['port_free']} (the NCCL group then "
        f"bound it); sockets left open by the preflight per process: {p['open_sockets']}.",
        "",
        f"## all_to_all (EP dispatch sizes: hidden {r['hidden']}, bf16, top-{r['top_k']}, "
        f"{r['n']} ranks, median of {r['iters']} iterations, slowest rank)",
        "",
        "| tokens/rank | bytes sent/rank | time (us) | algbw (GB/s) | busbw (GB/s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in r["all_to_all"]:
        lines.append(
            f"| {row['tokens']} | {row['bytes'] / 2**20:.1f} MiB | {row['us']:.1f} | "
            f"{row['algbw_gbs']:.1f} | {row['busbw_gbs']:.1f} |"
        )
    lines += [
        "",
        "Bytes sent per rank = tokens x top-k x hidden x 2 (each token's hidden state once per routed expert, "
        "experts spread evenly over the ranks; the 1/n that stays local is counted as nccl-tests counts it). "
        "algbw = bytes / time; busbw = algbw x (n-1)/n. One exchange was checked element by element first.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> int:
    from wideep.preflight.main import main as preflight_main

    workdir = Path(args.workdir)
    gpu = args.gpu
    rc = preflight_main(
        ["--master-addr-override", "127.0.0.1", "--report", str(workdir / f"preflight-{gpu}.json")],
    )
    if rc != 0:
        return rc

    import torch
    import torch.distributed as dist

    rank = int(os.environ["WIDEEP_DP_RANK_START"])
    n = int(os.environ["WIDEEP_DP_SIZE"])
    port = int(os.environ["WIDEEP_MASTER_PORT"])
    gpu_run = args.backend == "nccl"
    if gpu_run:
        torch.cuda.set_device(gpu)
        device = torch.device("cuda", gpu)
    else:  # a CPU smoke run of this script (Gloo), for machines without GPUs
        device = torch.device("cpu")
    sync = torch.cuda.synchronize if gpu_run else (lambda: None)
    t0 = time.monotonic()
    dist.init_process_group(
        args.backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=n,
        device_id=device if gpu_run else None,
    )
    warm = torch.ones(1, device=device)
    dist.all_reduce(warm)
    sync()
    nccl_init = time.monotonic() - t0
    assert int(warm.item()) == n

    # One exchange checked element by element: the chunk for rank j from rank r holds r*16 + j.
    rows = 64
    inp = torch.empty(n * rows, HIDDEN, dtype=torch.bfloat16, device=device)
    for j in range(n):
        inp[j * rows : (j + 1) * rows] = rank * 16 + j
    out = torch.full_like(inp, -1.0)
    dist.all_to_all_single(out, inp)
    sync()
    for s in range(n):
        chunk = out[s * rows : (s + 1) * rows]
        assert bool((chunk == s * 16 + rank).all()), f"all_to_all chunk from rank {s} is wrong on rank {rank}"

    results = []
    for tokens in [int(t) for t in args.tokens.split(",")]:
        elems = tokens * TOP_K * HIDDEN
        elems -= elems % n
        inp = torch.randn(elems, dtype=torch.float32, device=device).to(torch.bfloat16)
        out = torch.empty_like(inp)
        for _ in range(3):
            dist.all_to_all_single(out, inp)
        sync()
        times = []
        for _ in range(args.iters):
            if gpu_run:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                dist.all_to_all_single(out, inp)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e-3)
            else:
                t = time.perf_counter()
                dist.all_to_all_single(out, inp)
                times.append(time.perf_counter() - t)
        med = torch.tensor([statistics.median(times)], dtype=torch.float64, device=device)
        dist.all_reduce(med, op=dist.ReduceOp.MAX)
        seconds = float(med.item())
        nbytes = elems * 2
        algbw = nbytes / seconds / 1e9
        results.append(
            {
                "tokens": tokens,
                "bytes": nbytes,
                "us": seconds * 1e6,
                "algbw_gbs": algbw,
                "busbw_gbs": algbw * (n - 1) / n,
            }
        )
        del inp, out
    dist.barrier(device_ids=[gpu]) if gpu_run else dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        (workdir / "rank0.json").write_text(
            json.dumps(
                {
                    "n": n,
                    "device": torch.cuda.get_device_properties(gpu).name
                    if gpu_run
                    else "CPU (Gloo smoke run)",
                    "driver": _smi("driver_version"),
                    "topology": _topology(),
                    "torch": torch.__version__,
                    "cuda": torch.version.cuda,
                    "nccl": ".".join(str(v) for v in torch.cuda.nccl.version()) if gpu_run else "-",
                    "hidden": HIDDEN,
                    "top_k": TOP_K,
                    "iters": args.iters,
                    "nccl_init_s": nccl_init,
                    "all_to_all": results,
                },
                indent=1,
            )
        )
    return 0


def _smi(field: str) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.splitlines()[0].strip()
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def _topology() -> str:
    """How GPU0 reaches GPU1 per `nvidia-smi topo -m` (NV18 = 18 NVLinks, SYS/PHB/PIX = PCIe paths)."""
    try:
        out = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "topology unknown"
    for line in out.splitlines():
        cells = line.split()
        if cells[:1] == ["GPU0"] and len(cells) > 2:
            return f"GPU0-GPU1 link {cells[2]}"
    return "topology unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument(
        "--tokens", default=",".join(str(t) for t in TOKENS), help="tokens per rank, comma-separated"
    )
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=180.0, help="preflight timeout")
    ap.add_argument("--workdir", default="/tmp/preflight-gpu")
    ap.add_argument("--md", default=None, help="write the markdown results here")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--backend", choices=("nccl", "gloo"), default="nccl", help="gloo: a CPU smoke run")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gpu", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    return worker(args) if args.worker else launch(args)


if __name__ == "__main__":
    sys.exit(main())
