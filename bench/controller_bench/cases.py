"""The operator's cases: ``operator_case`` (apply → all objects → Ready; writes; no-op resyncs; gang
recovery) and ``memory_case`` (RSS after many groups Ready); ``Bench`` is what every case runs against, and
``observed_run`` records a plain client's run (the baseline's, LeaderWorkerSet's) the same way."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cluster import Api, cleanup, cluster_pids, make_namespace, wait_for, wait_quiet
from .common import OPERATOR_USER, PD_NAME, PD_PATH, PLURAL, WRITE_VERBS, BenchError
from .measure import (
    Audit,
    CpuSampler,
    histogram_delta,
    loadavg,
    pod_windows,
    summarize_profile,
    writes_from_metrics,
)
from .objects import object_path, pdep_doc, planned_counts
from .observer import Observer
from .operator import OperatorProc, wait_pdep_watch


@dataclass
class Bench:
    cluster: Any
    admin: Api
    user: Api  # the baseline identity: applies ParallelDeployments, and is the baseline client
    audit: Audit
    out_dir: Path
    resync_seconds: float = 2.0
    profile: bool = False

    def timeout(self, n: int) -> float:
        return 90 + 0.25 * n

    def audited(self, start: int, user: str, verbs: Iterable[str] | None = None) -> Counter[str]:
        time.sleep(0.3)  # the log backend is blocking, but give the last lines time to hit the file
        return Audit.count(self.audit.events(start), user, verbs)


async def observed_run(
    b: Bench,
    res: dict[str, Any],
    obs: Observer,
    sampler: CpuSampler,
    start: tuple[float, float, int, float],
    user: str,
    timeout: float,
) -> None:
    """Wait for a plain client's run (created, pods Ready) and record its timings, CPU and audited writes
    in ``res``; ``start`` is (t0 monotonic, t0 wall clock, audit offset, load average) taken at its POST."""
    t0, t0_wall, a0, load0 = start
    try:
        ms = await obs.wait(["created", "pods_ready"], timeout)
    finally:
        await obs.stop()
        await sampler.stop()
    res["t"] = {k: v - t0 for k, v in ms.items()}
    res["cpu_created"] = sampler.between(t0, ms["created"])
    res["cpu_ready"] = sampler.between(t0, ms["pods_ready"])
    res["top_others"] = sampler.top_others
    res["loadavg"] = [load0, loadavg()]
    res["writes_audit"] = dict(b.audited(a0, user, ("create", "patch", "update", "delete")))
    res.update(pod_windows(b.audit.events(a0), t0_wall))
    if "first" in res["pd_window"]:
        res["t"]["pd_received"] = res["pd_window"]["first"]


async def post_pdep(b: Bench, doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await b.user.ok("POST", object_path(doc), doc)
    return result


async def operator_case(b: Bench, n: int, recovery: bool, noop: bool = True) -> dict[str, Any]:
    """apply → all objects → Ready; writes; optionally no-op resyncs and a gang recovery."""
    ns = f"bench-op-{n}"
    await make_namespace(b.admin, ns)
    res: dict[str, Any] = {"n": n, "namespace": ns, "planned": planned_counts(n)}
    res["quiet_wait_s"] = await wait_quiet(b.admin, b.cluster.pids())
    profile = b.out_dir / f"operator-{n}.prof" if b.profile else None
    op = OperatorProc(b.cluster, [ns], b.out_dir, resync_seconds=b.resync_seconds, profile=profile).start()
    try:
        res["watch_open_s"] = await wait_pdep_watch(b.admin)
        await asyncio.sleep(0.5)
        res["rss_idle"] = op.memory()
        obs = await Observer(b.cluster, ns, "create", n, pd=True).start()
        pids = {**cluster_pids(b.cluster), "operator": op.pid, "observer": obs.pid}
        sampler = CpuSampler(pids).start()
        doc = pdep_doc(PD_NAME, ns, n)
        pd_body = json.dumps(doc).encode()
        # As for the baseline: the user's connections are open and the body serialised before t0.
        await asyncio.gather(*(b.user.call("GET", "/version") for _ in range(b.user.concurrency)))
        m0, a0, cpu0, load0 = op.metrics(), b.audit.offset(), op.cpu_seconds(), loadavg()
        t0, t0_wall = time.monotonic(), time.time()
        status, answer = await b.user.call("POST", object_path(doc), data=pd_body)
        if status != 201:
            raise BenchError(f"ParallelDeployment: {status} {answer.get('message', answer)}")
        try:
            ms = await obs.wait(["created", "pods_ready", "pd_ready"], b.timeout(n))
        finally:
            await obs.stop()
            await sampler.stop()
        res["t"] = {k: v - t0 for k, v in ms.items()}
        res["cpu_created"] = sampler.between(t0, ms["created"])
        res["cpu_ready"] = sampler.between(t0, ms["pd_ready"])
        res["top_others"] = sampler.top_others
        res["loadavg"] = [load0, loadavg()]
        res["operator_cpu_s"] = op.cpu_seconds() - cpu0
        await asyncio.sleep(1.0)  # the GroupReady event and the last status write
        m1 = op.metrics()
        res["writes_metrics"] = writes_from_metrics(m0, m1)
        res["connections_opened"] = round(
            m1.get("wideep_api_connections_opened_total", 0.0)
            - m0.get("wideep_api_connections_opened_total", 0.0)
        )
        res["writes_audit"] = dict(b.audited(a0, OPERATOR_USER, WRITE_VERBS))
        res["reads_audit"] = dict(b.audited(a0, OPERATOR_USER, ("get", "list")))
        res["write_window"] = Audit.window(
            b.audit.events(a0), OPERATOR_USER, t0_wall, ("patch", "create"), ("pods", "services")
        )
        if "last" in res["write_window"]:
            res["t"]["first_write"] = res["write_window"]["first"]
            res["t"]["last_write"] = res["write_window"]["last"]
        res.update(pod_windows(b.audit.events(a0), t0_wall))
        if "first" in res["pd_window"]:
            res["t"]["pd_received"] = res["pd_window"]["first"]
        res["reconciles"], res["reconcile_s"] = histogram_delta(m0, m1, "wideep_reconcile_duration_seconds")
        res["time_to_ready_metric"] = histogram_delta(m0, m1, "wideep_time_to_ready_seconds")[1]

        # No-op resyncs: the group is Ready and nothing changes; three resync periods must write nothing.
        if noop:
            a2, m2, cpu2 = b.audit.offset(), op.metrics(), op.cpu_seconds()
            window = 3 * b.resync_seconds + 0.5
            await asyncio.sleep(window)
            m3 = op.metrics()
            res["noop"] = {
                "window_s": window,
                "reconciles": histogram_delta(m2, m3, "wideep_reconcile_duration_seconds")[0],
                "reconcile_s": histogram_delta(m2, m3, "wideep_reconcile_duration_seconds")[1],
                "writes_metrics": writes_from_metrics(m2, m3),
                "writes_audit": dict(b.audited(a2, OPERATOR_USER, WRITE_VERBS)),
                "requests_audit": dict(b.audited(a2, OPERATOR_USER)),
                "operator_cpu_s": op.cpu_seconds() - cpu2,
            }
        res["rss_ready"] = op.memory()

        if recovery:
            res["recovery"] = await _recovery(b, op, ns, n)
    finally:
        rc = op.stop()
        res["operator_exit"] = rc
    if profile is not None and profile.exists():
        res["profile"] = summarize_profile(profile)
    res["cleanup_s"] = await cleanup(b.admin, ns)
    return res


async def _recovery(b: Bench, op: OperatorProc, ns: str, n: int) -> dict[str, Any]:
    """Fail one rank (kwok's pod-container-running-failed stage) → all N pods new and Ready."""
    obs = await Observer(b.cluster, ns, "recovery", n, pd=True).start()
    m0, a0 = op.metrics(), b.audit.offset()
    victim = f"{PD_NAME}-{n // 2}"
    patch = {
        "metadata": {
            "labels": {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"},
            "annotations": {
                "pod-container-running-failed.stage.kwok.x-k8s.io/delay": "0s",
                "pod-container-running-failed.stage.kwok.x-k8s.io/jitter-delay": "0s",
            },
        }
    }
    t_label, t_label_wall = time.monotonic(), time.time()
    await b.admin.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/{victim}",
        patch,
        content_type="application/merge-patch+json",
    )
    try:
        ms = await obs.wait(["failed", "old_gone", "created", "pods_ready", "pd_ready"], b.timeout(n))
    finally:
        await obs.stop()
    t_failed = ms["failed"]
    await asyncio.sleep(1.0)
    m1 = op.metrics()
    events = b.audit.events(a0)
    t_failed_wall = t_label_wall + (t_failed - t_label)
    return {
        "deletes": Audit.window(events, OPERATOR_USER, t_failed_wall, ("delete",), ("pods",)),
        "creates": Audit.window(events, OPERATOR_USER, t_failed_wall, ("create", "patch"), ("pods",)),
        "status_writes": Audit.window(
            events, OPERATOR_USER, t_failed_wall, ("patch",), ("paralleldeployments/status",)
        ),
        "victim": victim,
        "t_from_label": {k: v - t_label for k, v in ms.items()},
        "t": {k: v - t_failed for k, v in ms.items()},
        "writes_metrics": writes_from_metrics(m0, m1),
        "writes_audit": dict(b.audited(a0, OPERATOR_USER, WRITE_VERBS)),
        "reads_audit": dict(b.audited(a0, OPERATOR_USER, ("get", "list"))),
    }


async def memory_case(b: Bench, pdeps: int = 100, ranks: int = 16) -> dict[str, Any]:
    """Operator RSS after reconciling ``pdeps`` ParallelDeployments x ``ranks`` ranks to Ready."""
    ns = "bench-mem"
    await make_namespace(b.admin, ns)
    await wait_quiet(b.admin, b.cluster.pids())
    op = OperatorProc(b.cluster, [ns], b.out_dir, resync_seconds=60.0).start()
    res: dict[str, Any] = {"pdeps": pdeps, "ranks": ranks}
    try:
        await asyncio.sleep(1.0)
        res["rss_idle"] = op.memory()
        t0 = time.monotonic()
        await asyncio.gather(*(post_pdep(b, pdep_doc(f"m{i:03d}", ns, ranks)) for i in range(pdeps)))

        async def all_ready() -> int | None:
            items = await b.admin.items(f"{PD_PATH}/namespaces/{ns}/{PLURAL}")
            ready = sum(
                1
                for pd in items
                if (pd.get("status") or {}).get("observedGeneration") == pd["metadata"]["generation"]
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (pd.get("status") or {}).get("conditions") or []
                )
            )
            return ready if ready == pdeps else None

        await wait_for(f"{pdeps} ParallelDeployments Ready", all_ready, 120 + pdeps * ranks * 0.2, 1.0)
        res["all_ready_s"] = time.monotonic() - t0
        await asyncio.sleep(2.0)
        res["rss_ready"] = op.memory()
        pods = await b.admin.items(f"/api/v1/namespaces/{ns}/pods")
        res["pods"] = len(pods)
    finally:
        op.stop()
    return res
