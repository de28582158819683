"""What the operator's own client costs in CPU while a large group is created, against a plain aiohttp client:
POSTing the rank pods, and taking in the watch events of those pods.

    python -m bench.client_cost [--pods 1024] [--rounds 3]

Starts its own local control plane (4 fake nodes). Pods are those of the bench's DP=``pods`` plan with their
ownerReferences dropped and ``schedulerName: none`` (nothing binds them, so each pod makes one watch event).
Each round, each client in a namespace of its own, in alternating order:

- creates, 64 in flight: the plain client is the bench baseline's (one aiohttp session, bodies serialised
  before the clock, each answer decoded with json); wideep is ``KubeClient.create`` and ``Cache.put_child`` of
  the answer (the reconciler's write path). CPU of this process per create (``time.process_time``).
- watch: a child process POSTs the pods with the plain client while this process watches the namespace; the
  plain watch is aiohttp ``readline`` and ``orjson.loads`` of each line; wideep is its ``Informer`` (decode,
  trim, cache, notify). CPU of this process per event, from before the child starts to the last event.

Writes ``bench/results/client_cost.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from devcluster.cluster import LocalCluster, state_root
from wideep.kube.cache import Cache
from wideep.kube.client import KubeClient
from wideep.kube.informer import SELECTOR, Informer
from wideep.kube.kubeconfig import Credentials, load_credentials
from wideep.reconcile.pods import CLASSIFIER

from .baseline import PLACEHOLDER_UID, create_all
from .controller_bench.cluster import Api
from .controller_bench.common import CONCURRENCY
from .controller_bench.objects import object_path, pdep_doc, planned_objects

ROOT = Path(__file__).resolve().parents[1]


def pod_bodies(n: int, namespace: str) -> list[dict[str, Any]]:
    """The rank pods of the bench's DP=``n`` group, unowned and for no scheduler."""
    pods = [o for o in planned_objects(pdep_doc("g", namespace, n), PLACEHOLDER_UID) if o["kind"] == "Pod"]
    for body in pods:
        body["metadata"].pop("ownerReferences", None)
        body["spec"]["schedulerName"] = "none"
    return pods


def plain_api(creds: Credentials) -> Api:
    """The bench baseline's client (64 in flight, one aiohttp session)."""
    assert creds.ca_path is not None and creds.token is not None, "the local cluster's kubeconfig"
    return Api(creds.server, Path(creds.ca_path), creds.token, CONCURRENCY)


async def plain_creates(creds: Credentials, bodies: list[dict[str, Any]]) -> float:
    """CPU seconds of the bench baseline's client POSTing ``bodies`` (serialised before the clock)."""
    api = plain_api(creds)
    data = [(object_path(b), json.dumps(b).encode()) for b in bodies]
    await asyncio.gather(*(api.call("GET", "/version") for _ in range(CONCURRENCY)))
    c0 = time.process_time()
    _, errors = await create_all(api, data)
    cpu = time.process_time() - c0
    await api.close()
    if errors:
        raise RuntimeError(f"{len(errors)} creates failed, first: {errors[0]}")
    return cpu


async def wideep_creates(creds: Credentials, bodies: list[dict[str, Any]]) -> float:
    """CPU seconds of the reconciler's write path: KubeClient.create, then the answer into the cache."""
    kube = KubeClient(creds, concurrency=CONCURRENCY)
    cache = Cache(CLASSIFIER)
    await kube.warm(CONCURRENCY)

    async def one(body: dict[str, Any]) -> None:
        cache.put_child(await kube.create(body), note=False)

    c0 = time.process_time()
    await asyncio.gather(*(one(b) for b in bodies))
    cpu = time.process_time() - c0
    await kube.close()
    return cpu


def start_creator(namespace: str, n: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "bench.client_cost", "--create-into", namespace, "--pods", str(n)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT)


async def plain_watch(creds: Credentials, namespace: str, n: int) -> float:
    """CPU seconds of a bare watch (readline, orjson) taking in ``n`` ADDED events."""
    api = plain_api(creds)
    session = await api.session()
    url = f"{creds.server}/api/v1/namespaces/{namespace}/pods"
    _, listed = await api.call(
        "GET", f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": SELECTOR}
    )
    params = {
        "watch": "1",
        "resourceVersion": listed["metadata"]["resourceVersion"],
        "labelSelector": SELECTOR,
        "allowWatchBookmarks": "true",
    }
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    seen = 0
    async with session.get(url, params=params, timeout=timeout) as r:
        c0 = time.process_time()
        creator = start_creator(namespace, n)
        async for line in r.content:
            if line.strip() and orjson.loads(line).get("type") == "ADDED":
                seen += 1
                if seen == n:
                    break
        cpu = time.process_time() - c0
    await api.close()
    if creator.wait(120) != 0:
        raise RuntimeError("the creator process failed")
    return cpu


async def wideep_watch(creds: Credentials, namespace: str, n: int) -> float:
    """CPU seconds of wideep's Informer taking in ``n`` pod events (decode, trim, cache, notify)."""
    kube = KubeClient(creds, concurrency=CONCURRENCY)
    cache = Cache(CLASSIFIER)
    done = asyncio.Event()
    notified: set[tuple[str, str]] = set()

    def notify(key: tuple[str, str]) -> None:
        notified.add(key)
        if sum(len(b) for b in cache.children["Pod"].values()) >= n:
            done.set()

    informer = Informer(kube, cache, "Pod", namespace, notify)
    task = asyncio.create_task(informer.run())
    await informer.synced.wait()
    await asyncio.sleep(0.2)  # the watch is open
    c0 = time.process_time()
    creator = start_creator(namespace, n)
    await asyncio.wait_for(done.wait(), 120)
    cpu = time.process_time() - c0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await kube.close()
    if creator.wait(120) != 0:
        raise RuntimeError("the creator process failed")
    assert notified, "the informer notified no group"
    return cpu


async def measure(cluster: LocalCluster, n: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    creds = load_credentials()
    results: dict[str, dict[str, list[float]]] = {
        "create": {"plain": [], "wideep": []},
        "watch": {"plain": [], "wideep": []},
    }
    for r in range(rounds):
        order = ["plain", "wideep"] if r % 2 == 0 else ["wideep", "plain"]
        for what in ("create", "watch"):
            for who in order:
                ns = f"cc-{what}-{who}-{r}"
                cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
                if what == "create":
                    bodies = pod_bodies(n, ns)
                    fn = plain_creates if who == "plain" else wideep_creates
                    cpu = await fn(creds, bodies)
                else:
                    watch = plain_watch if who == "plain" else wideep_watch
                    cpu = await watch(creds, ns, n)
                results[what][who].append(cpu / n)
                print(f"round {r} {what:6s} {who:6s} {cpu / n * 1e3:.3f} ms CPU each", flush=True)
                cluster.request("DELETE", f"/api/v1/namespaces/{ns}", None)
    return results


async def create_into(namespace: str, n: int) -> None:
    await plain_creates(load_credentials(), pod_bodies(n, namespace))


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.client_cost", description=__doc__)
    p.add_argument("--pods", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--create-into", help=argparse.SUPPRESS)  # the child process of a watch measurement
    args = p.parse_args()
    if args.create_into:
        asyncio.run(create_into(args.create_into, args.pods))
        return 0
    cluster = LocalCluster(state_root() / "bench-client-cost", nodes=4, gpus_per_node=8, verbose=False)
    cluster.start()
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        res = asyncio.run(measure(cluster, args.pods, args.rounds))
    finally:
        cluster.stop()
    rows = []
    for what, label in (
        ("create", "POST a pod, take in the answer"),
        ("watch", "take in one pod watch event"),
    ):
        plain = statistics.median(res[what]["plain"])
        ours = statistics.median(res[what]["wideep"])
        rows.append(
            f"| {label} | {ours * 1e3:.3f} ms | {plain * 1e3:.3f} ms | {ours / plain:.2f} | "
            f"{', '.join(f'{x * 1e3:.3f}' for x in res[what]['wideep'])} | "
            f"{', '.join(f'{x * 1e3:.3f}' for x in res[what]['plain'])} |"
        )
    lines = [
        "# What the operator's own client costs in CPU",
        "",
        "Written by `python -m bench.client_cost` (its own local control plane); CPU of the measuring process "
        f"(`time.process_time`) per object, {args.pods} pods per measurement, median of {args.rounds} rounds in "
        "alternating order. wideep: `KubeClient.create` + `Cache.put_child` (creates), `Informer` (watch); "
        "plain: the bench baseline's aiohttp client (creates), aiohttp readline + orjson (watch).",
        "",
        "| per object | wideep | plain | ratio | wideep, each round (ms) | plain, each round (ms) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    out = ROOT / "bench" / "results" / "client_cost.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
