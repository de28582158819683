"""Rendezvous time of ``wideep preflight`` for groups of N CPU processes on this machine.

Each size runs twice, with the same N processes and the same planner-rendered environment:

* baseline: every process imports torch and exits (``python -c "import torch"``): what N torch
  processes cost on this machine anyway;
* preflight: ``python -m wideep preflight`` in every process (external LB, one rank a pod).

Reported per N: both walls (spawn to the last exit) and their ratio, and from the preflight's own
JSON reports: the spread of the arrivals at the store (how far apart the processes got through
their torch import), the rendezvous proper (from the last arrival to every rank through the verdict,
the Gloo group and both DP collectives), and rank 0's "all N ranks joined" time.

    python bench/preflight_rendezvous.py [--sizes 2,8,32,64] [--python PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from devcluster import local_preflight as lg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline(python: str, n: int, obj: dict[str, Any]) -> float:
    """Wall time for the N processes of the group to import torch and exit."""
    envs = [env for _, env in lg.pod_commands_and_envs(obj)]
    base = lg.base_env()
    t0 = time.monotonic()
    procs = [subprocess.Popen([python, "-c", "import torch"], env={**base, **env}) for env in envs]
    rcs = [p.wait() for p in procs]
    if any(rcs):
        raise SystemExit(f"baseline with {n} processes failed: {rcs}")
    return time.monotonic() - t0


def preflight(python: str, n: int, obj: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    runs = lg.wait(lg.launch(python, obj, workdir), timeout + 60)
    wall = time.monotonic() - t0
    bad = [r for r in runs if r.rc != 0]
    if bad:
        tail = "\n".join(bad[0].log.splitlines()[-15:])
        raise SystemExit(f"preflight of {n} processes failed (pods {[r.pod for r in bad]}):\n{tail}")
    ranks = [rank for r in runs for rank in r.report["ranks"]]
    arrived = [rank["arrived_at"] for rank in ranks]
    done = [rank["collectives_at"] for rank in ranks]
    verdicts = [rank["verdict_at"] for rank in ranks]
    rank0 = runs[0].report["ranks"][0]
    return {
        "wall_s": wall,
        "arrival_spread_s": max(arrived) - min(arrived),
        "rendezvous_s": max(done) - max(arrived),
        "verdict_after_last_arrival_s": max(verdicts) - max(arrived),
        "rank0_all_joined_s": rank0["verdict_at"] - rank0["arrived_at"],
        "torch_import_median_s": statistics.median(r.report["torch_import_seconds"] for r in runs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2,8,32,64")
    ap.add_argument("--python", default=None, help="a Python with torch (default: the vLLM virtualenv)")
    ap.add_argument("--timeout", type=float, default=900.0, help="preflight timeout of each run")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    python = args.python or lg.torch_python()
    if not python:
        print("no Python with torch: run `bash tools/vllm-venv.sh` or pass --python", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="preflight-bench-") as tmp:
        for n in sizes:
            obj = lg.deployment(f"bench{n}", dp=n, master_port=free_port(), timeout_seconds=int(args.timeout))
            base = baseline(python, n, obj)
            res = preflight(python, n, obj, Path(tmp) / f"n{n}", args.timeout)
            row = {"n": n, "baseline_wall_s": base, **res, "ratio": res["wall_s"] / base}
            rows.append(row)
            print(
                f"n={n}: preflight {res['wall_s']:.1f}s, baseline {base:.1f}s, "
                f"rendezvous {res['rendezvous_s']:.3f}s",
                file=sys.stderr,
            )
    print(f"# preflight rendezvous, CPU processes ({os.cpu_count()} cores, torch python {python})")
    print()
    print(
        "| N | preflight wall (s) | baseline: import torch + exit (s) | ratio | arrival spread (s) "
        "| rendezvous after last arrival (s) | rank 0 'all joined' (s) | torch import, median (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']} | {r['wall_s']:.2f} | {r['baseline_wall_s']:.2f} | {r['ratio']:.2f} "
            f"| {r['arrival_spread_s']:.2f} | {r['rendezvous_s']:.3f} | {r['rank0_all_joined_s']:.2f} "
            f"| {r['torch_import_median_s']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
