"""What one ParallelDeployment status write costs the API server, by group size and verb.

    python -m bench.status_write [--sizes 64 256 1024] [--reps 10]

Starts its own local control plane, creates one ParallelDeployment per size and writes a status with that many
rank entries ``reps`` times with server-side apply (the operator's verb) and with a JSON merge patch, in
alternating rounds; reports kube-apiserver CPU (from /proc) and wall time per write. Baseline: the same
number of writes of a status without rank entries, in the same process on the same API server. Writes
``bench/results/status_write.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from wideep.api import constants as c
from wideep.devcluster.cluster import LocalCluster, state_root
from wideep.reconcile.kube import KubeClient, load_credentials, resource_path

from .controller_bench import pdep_doc

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(n: int, ready: int) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "groupGeneration": 1,
        "ready": f"{ready}/{n}",
        "readyRanks": ready,
        "totalRanks": n,
        "ranks": [
            {
                "rank": r,
                "pod": f"g-{r}",
                "phase": "Running",
                "ready": r < ready,
                "node": f"kwok-{r % 32}",
                "restarts": 0,
            }
            for r in range(n)
        ],
    }


async def write(kube: KubeClient, ns: str, verb: str, st: dict[str, Any]) -> None:
    if verb == "apply":
        await kube.apply_status(ns, "g", st)
    else:
        await kube.request(
            "PATCH",
            resource_path(c.KIND, ns, "g", "status"),
            params={"fieldManager": "wideep"},
            body={"status": st},
            content_type="application/merge-patch+json",
            write_kind="status",
        )


async def measure(cluster: LocalCluster, sizes: list[int], reps: int) -> list[dict[str, Any]]:
    kube = KubeClient(load_credentials(), concurrency=4)
    api_pid = cluster.pids()["kube-apiserver"]
    rows = []
    try:
        for n in sizes:
            ns = f"status-{n}"
            cluster.api(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
            await kube.request("POST", resource_path(c.KIND, ns), body=pdep_doc("g", ns, n))
            per: dict[str, list[tuple[float, float]]] = {}
            for round_ in range(2):
                for verb, ranks in (("apply", 0), ("apply", n), ("merge", n)):
                    c0, t0 = cpu_seconds(api_pid), time.perf_counter()
                    for i in range(reps):
                        st = status(ranks, i + round_ * reps) if ranks else {**status(n, i)} | {"ranks": []}
                        await write(kube, ns, verb, st)
                    per.setdefault(f"{verb}/{ranks}", []).append(
                        ((cpu_seconds(api_pid) - c0) / reps, (time.perf_counter() - t0) / reps)
                    )
            size = len(orjson.dumps(status(n, 0)))
            base_cpu = statistics.median(x[0] for x in per["apply/0"])
            for key, label in ((f"apply/{n}", "server-side apply"), (f"merge/{n}", "JSON merge patch")):
                cpu = statistics.median(x[0] for x in per[key])
                wall = statistics.median(x[1] for x in per[key])
                rows.append(
                    {
                        "n": n,
                        "verb": label,
                        "bytes": size,
                        "cpu_ms": cpu * 1000,
                        "wall_ms": wall * 1000,
                        "base_cpu_ms": base_cpu * 1000,
                        "ratio": cpu / base_cpu if base_cpu else float("nan"),
                    }
                )
                print(
                    f"N={n} {label}: {size} bytes, API-server CPU {cpu * 1000:.0f} ms/write "
                    f"(no ranks: {base_cpu * 1000:.0f} ms), wall {wall * 1000:.0f} ms",
                    flush=True,
                )
    finally:
        await kube.close()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.status_write", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args()
    cluster = LocalCluster(state_root() / "bench-status", nodes=1, gpus_per_node=8, verbose=False)
    cluster.start()
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        proc = cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        assert proc.returncode == 0, proc.stderr
        cluster.wait_for(
            "CRD served",
            lambda: cluster.request("GET", f"/apis/{c.GROUP}/{c.VERSION}/{c.PLURAL}")[0] == 200,
            timeout=60,
        )
        rows = asyncio.run(measure(cluster, args.sizes, args.reps))
    finally:
        cluster.stop()
    lines = [
        "# Status write cost",
        "",
        "Written by `python -m bench.status_write`. API-server CPU per ParallelDeployment status write (median of 2",
        f"rounds of {args.reps} writes), against a status without rank entries on the same API server.",
        "",
        "| ranks | verb | status JSON | API-server CPU / write | wall / write | without ranks | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['verb']} | {r['bytes'] / 1024:.0f} KiB | {r['cpu_ms']:.0f} ms | {r['wall_ms']:.0f} ms | "
            f"{r['base_cpu_ms']:.0f} ms | {r['ratio']:.1f} |"
        )
    out = ROOT / "bench" / "results" / "status_write.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
