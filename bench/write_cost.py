"""What the operator's writes cost the API server: creating rank pods and Services by verb, and one
ParallelDeployment status write by group size and verb.

    python -m bench.write_cost [--sizes 64 256 1024] [--reps 10] [--objects 1024]

Starts its own local control plane (4 fake nodes), then
- creates the pods and Services of a DP=``objects`` plan with POST (baseline) and with server-side apply, each
  kind in its own namespace, 64 in flight, twice in alternating order; reports kube-apiserver CPU (from /proc)
  and wall time;
- creates one ParallelDeployment per size and writes a status with that many rank entries ``reps`` times
  with server-side apply (the operator's verb) and with a JSON merge patch; baseline: a status without rank
  entries on the same API server;
- for an 8-rank group, where one status write's API-server time goes: the shipped CRD against copies of it
  (other API groups) without its CEL rules, without its status schema, and without any schema, and a
  ConfigMap merge patch (a small object with no schema to check).
Writes ``bench/results/write_cost.md``.
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
import yaml

from devcluster.cluster import LocalCluster, state_root
from tests.support.crd import install_crd
from wideep.api import constants as c
from wideep.kube.client import KubeClient, resource_path
from wideep.kube.kubeconfig import load_credentials

from .controller_bench.measure import cpu_seconds
from .controller_bench.objects import pdep_doc, planned_objects

ROOT = Path(__file__).resolve().parents[1]


def api_cpu(pid: int) -> float:
    value = cpu_seconds(pid)
    if value is None:
        raise RuntimeError("kube-apiserver is gone")
    return value


def make_namespace(cluster: LocalCluster, name: str) -> None:
    cluster.api(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )


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
        )


async def measure(cluster: LocalCluster, sizes: list[int], reps: int) -> list[dict[str, Any]]:
    kube = KubeClient(load_credentials(), concurrency=4)
    api_pid = cluster.pids()["kube-apiserver"]
    rows = []
    try:
        for n in sizes:
            ns = f"status-{n}"
            make_namespace(cluster, ns)
            await kube.request("POST", resource_path(c.KIND, ns), body=pdep_doc("g", ns, n))
            per: dict[str, list[tuple[float, float]]] = {}
            for round_ in range(2):
                for verb, ranks in (("apply", 0), ("apply", n), ("merge", n)):
                    c0, t0 = api_cpu(api_pid), time.perf_counter()
                    for i in range(reps):
                        st = status(ranks, i + round_ * reps) if ranks else {**status(n, i)} | {"ranks": []}
                        await write(kube, ns, verb, st)
                    per.setdefault(f"{verb}/{ranks}", []).append(
                        ((api_cpu(api_pid) - c0) / reps, (time.perf_counter() - t0) / reps)
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


SMALL_N = 8
# (label, variant): copies of the shipped CRD in their own API groups, each cut down by one thing.
VARIANTS = (
    ("ParallelDeployment, CRD as shipped", ""),
    ("the same without its CEL rules", "nocel"),
    ("the same without its status schema", "nostatus"),
    ("the same without any schema or CEL rule", "bare"),
)
CRD_FILE = ROOT / "crds" / "paralleldeployments.wideep.dev.yaml"


def _strip_rules(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("x-kubernetes-validations", None)
        for v in node.values():
            _strip_rules(v)
    elif isinstance(node, list):
        for v in node:
            _strip_rules(v)


def variant_group(variant: str) -> str:
    """The API group of a CRD variant; the shipped one for ``""``."""
    return f"{variant}.write-cost.wideep.dev" if variant else c.GROUP


def crd_variant(variant: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    group = variant_group(variant)
    crd["metadata"] = {"name": f"{c.PLURAL}.{group}"}
    crd["spec"]["group"] = group
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    free = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if variant in ("nocel", "bare"):
        _strip_rules(schema)
    if variant in ("nostatus", "bare"):
        schema["properties"]["status"] = dict(free)
    if variant == "bare":
        schema["properties"]["spec"] = dict(free)
    return crd


async def measure_small(cluster: LocalCluster, reps: int) -> list[dict[str, Any]]:
    """One status write of an 8-rank group (server-side apply, as the operator writes it) per CRD variant,
    and a ConfigMap merge patch; blocks of ``reps`` writes, 3 rounds in rotating order."""
    ns = "small-writes"
    make_namespace(cluster, ns)
    for variant in (v for _, v in VARIANTS if v):
        proc = cluster.kubectl(
            "apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd_variant(variant))
        )
        if proc.returncode != 0:
            raise RuntimeError(f"CRD variant {variant}: {proc.stderr}")
        group = variant_group(variant)
        cluster.wait_for(  # a new CRD is served a moment after it is established
            f"{group} served",
            lambda group=group: cluster.request("GET", f"/apis/{group}/{c.VERSION}/{c.PLURAL}")[0] == 200,
        )
    kube = KubeClient(load_credentials(), concurrency=4)
    api_pid = cluster.pids()["kube-apiserver"]
    api_versions: dict[str, str] = {}  # label -> apiVersion of its ParallelDeployment
    try:
        for label, variant in VARIANTS:
            doc = pdep_doc("g", ns, SMALL_N)
            doc["apiVersion"] = api_versions[label] = f"{variant_group(variant)}/{c.VERSION}"
            await kube.request("POST", f"/apis/{doc['apiVersion']}/namespaces/{ns}/{c.PLURAL}", body=doc)
        cm = "ConfigMap merge patch (no schema)"
        await kube.request(
            "POST",
            f"/api/v1/namespaces/{ns}/configmaps",
            body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "g"}, "data": {"k": "0"}},
        )
        labels = [label for label, _ in VARIANTS] + [cm]
        per: dict[str, list[tuple[float, float]]] = {}
        count = 0
        for round_ in range(3):
            for label in labels[round_:] + labels[:round_]:
                c0, t0 = api_cpu(api_pid), time.perf_counter()
                for _ in range(reps):
                    count += 1
                    if label == cm:
                        await kube.request(
                            "PATCH",
                            f"/api/v1/namespaces/{ns}/configmaps/g",
                            body={"data": {"k": str(count)}},
                            content_type="application/merge-patch+json",
                        )
                        continue
                    body = {
                        "apiVersion": api_versions[label],
                        "kind": c.KIND,
                        "metadata": {"name": "g", "namespace": ns},
                        "status": {**status(SMALL_N, SMALL_N), "observedGeneration": count},
                    }
                    await kube.request(
                        "PATCH",
                        f"/apis/{api_versions[label]}/namespaces/{ns}/{c.PLURAL}/g/status",
                        params={"fieldManager": c.FIELD_MANAGER, "force": "true"},
                        body=body,
                        content_type="application/apply-patch+yaml",
                    )
                per.setdefault(label, []).append(
                    ((api_cpu(api_pid) - c0) / reps, (time.perf_counter() - t0) / reps)
                )
    finally:
        await kube.close()
    rows = []
    for label in labels:
        cpu = statistics.median(x[0] for x in per[label])
        wall = statistics.median(x[1] for x in per[label])
        rows.append({"what": label, "cpu_ms": cpu * 1000, "wall_ms": wall * 1000})
        print(f"{label}: API-server CPU {cpu * 1000:.1f} ms/write, wall {wall * 1000:.1f} ms", flush=True)
    return rows


async def measure_creates(cluster: LocalCluster, n: int) -> list[dict[str, Any]]:
    kube = KubeClient(load_credentials(), concurrency=64)
    api_pid = cluster.pids()["kube-apiserver"]
    objects = planned_objects(pdep_doc("g", "x", n), "00000000-0000-4000-8000-0000b0a5e11e")
    for o in objects:
        o["metadata"].pop("ownerReferences", None)  # no owner in these namespaces: nothing to collect
    per: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for round_ in range(2):
            for kind in ("Service", "Pod"):
                verbs = ("create", "apply") if round_ == 0 else ("apply", "create")
                for verb in verbs:
                    ns = f"verbs-{kind.lower()}-{verb}-{round_}"
                    make_namespace(cluster, ns)
                    await asyncio.sleep(2)
                    these = [
                        {**o, "metadata": {**o["metadata"], "namespace": ns}}
                        for o in objects
                        if o["kind"] == kind
                    ]
                    write = kube.create if verb == "create" else kube.apply
                    c0, t0 = api_cpu(api_pid), time.perf_counter()
                    await asyncio.gather(*(write(o) for o in these))
                    per.setdefault((kind, verb), []).append((api_cpu(api_pid) - c0, time.perf_counter() - t0))
                    cluster.request("DELETE", f"/api/v1/namespaces/{ns}/pods", None)
                    await asyncio.sleep(2)
    finally:
        await kube.close()
    rows = []
    for kind in ("Pod", "Service"):
        base = statistics.median(x[0] for x in per[(kind, "create")])
        for verb in ("create", "apply"):
            cpu = statistics.median(x[0] for x in per[(kind, verb)])
            wall = statistics.median(x[1] for x in per[(kind, verb)])
            count = sum(o["kind"] == kind for o in objects)
            rows.append(
                {
                    "kind": kind,
                    "verb": verb,
                    "count": count,
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "ratio": cpu / base,
                }
            )
            print(f"{count} {kind}s by {verb}: API-server CPU {cpu:.2f} s, wall {wall:.2f} s", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.write_cost", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument(
        "--objects", type=int, default=1024, help="DP size of the plan whose pods and Services are created"
    )
    p.add_argument("--small-reps", type=int, default=100, help="writes per block of the 8-rank comparison")
    args = p.parse_args()
    cluster = LocalCluster(state_root() / "bench-write-cost", nodes=4, gpus_per_node=8, verbose=False)
    cluster.start()
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        install_crd(cluster)
        creates = asyncio.run(measure_creates(cluster, args.objects))
        rows = asyncio.run(measure(cluster, args.sizes, args.reps))
        small = asyncio.run(measure_small(cluster, args.small_reps))
    finally:
        cluster.stop()
    lines = [
        "# What the operator's writes cost the API server",
        "",
        "Written by `python -m bench.write_cost` (its own local control plane; kube-apiserver CPU from /proc).",
        "",
        f"## Creating the objects of a DP={args.objects} plan (median of 2 rounds, 64 in flight)",
        "",
        "Baseline: POST. The operator POSTs pods and server-side applies Services and every later change.",
        "",
        "| objects | verb | API-server CPU | wall | CPU vs POST |",
        "|---|---|---|---|---|",
        *(
            f"| {r['count']} {r['kind']}s | {'POST' if r['verb'] == 'create' else 'server-side apply'} | "
            f"{r['cpu_s']:.2f} s | {r['wall_s']:.2f} s | {r['ratio']:.2f} |"
            for r in creates
        ),
        "",
        "## One ParallelDeployment status write",
        "",
        f"Median of 2 rounds of {args.reps} writes, against a status without rank entries on the same API server.",
        "",
        "| ranks | verb | status JSON | API-server CPU / write | wall / write | without ranks | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['verb']} | {r['bytes'] / 1024:.0f} KiB | {r['cpu_ms']:.0f} ms | {r['wall_ms']:.0f} ms | "
            f"{r['base_cpu_ms']:.0f} ms | {r['ratio']:.1f} |"
        )
    first = small[0]
    lines += [
        "",
        f"## Where one status write of an {SMALL_N}-rank group goes",
        "",
        f"Server-side apply of an {SMALL_N}-rank status (the operator's write when a group becomes Ready) to the "
        "shipped CRD and to copies of it in other API groups, each without one part; a ConfigMap merge patch "
        "for a small object with no schema. Median of 3 rounds of "
        f"{args.small_reps} writes one at a time, in rotating order. The API server validates the whole object "
        "(spec too, with every CEL rule) on every status write.",
        "",
        "| write | API-server CPU / write | wall / write | CPU vs shipped CRD |",
        "|---|---|---|---|",
        *(
            f"| {r['what']} | {r['cpu_ms']:.1f} ms | {r['wall_ms']:.1f} ms | "
            f"{r['cpu_ms'] / first['cpu_ms']:.2f} |"
            for r in small
        ),
    ]
    out = ROOT / "bench" / "results" / "write_cost.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
