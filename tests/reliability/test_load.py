"""Load: 50 ParallelDeployments applied at once (one server-side apply of a List) all reach Ready.

Reports the operator's memory (VmRSS now, VmHWM peak) and the reconcile latency percentiles: the duration of
one reconcile pass (the operator's wideep_reconcile_duration_seconds histogram) and apply-to-Ready per group.
Once all are Ready, two resync periods must pass without a single write.

``WIDEEP_LOAD_GROUPS`` (default 50) and ``WIDEEP_LOAD_RANKS`` (ranks per group, default 2).
"""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml

from devcluster.cluster import LocalCluster
from tests.support import ROOT
from tests.support.builders import on_pool, pdep
from tests.support.kube import API, Kube
from tests.support.reliability import (
    Operators,
    histogram_quantiles,
    percentiles,
    purge,
    report,
    status_rss,
    unexpected_log_lines,
)
from wideep.api import constants as c

GROUPS = int(os.environ.get("WIDEEP_LOAD_GROUPS", "50"))
RANKS = int(os.environ.get("WIDEEP_LOAD_RANKS", "2"))
RESYNC = 3.0


def _chart_memory_limit_mib() -> float:
    values = yaml.safe_load((ROOT / "charts" / "wideep-operator" / "values.yaml").read_text())
    limit = str(values["resources"]["limits"]["memory"])
    assert limit.endswith("Mi"), limit
    return float(limit[:-2])


@pytest.mark.slow
def test_fifty_groups_applied_at_once_all_reach_ready(
    cluster: LocalCluster, kube: Kube, operators: Operators, namespace: str, gpu_pool: str
) -> None:
    op = operators.start([namespace])
    assert op.proc is not None
    idle = status_rss(op.proc.pid)
    names = [f"load-{i:02d}" for i in range(GROUPS)]
    items = [on_pool(pdep(n, namespace, dp=RANKS), gpu_pool) for n in names]
    doc = {"apiVersion": "v1", "kind": "List", "items": items}

    t0 = time.monotonic()
    proc = cluster.kubectl(
        "apply", "--server-side", "--field-manager=load-test", "-f", "-", input=json.dumps(doc)
    )
    assert proc.returncode == 0, proc.stderr
    applied_s = time.monotonic() - t0
    ready_at: dict[str, float] = {}
    deadline = t0 + 240
    while len(ready_at) < GROUPS and time.monotonic() < deadline:
        op.alive()
        listing = kube.cluster.api("GET", f"{API}/namespaces/{namespace}/{c.PLURAL}")["items"]
        now = time.monotonic()
        for obj in listing:
            name = obj["metadata"]["name"]
            st = obj.get("status") or {}
            ready = any(
                cd["type"] == c.COND_READY and cd["status"] == "True" for cd in st.get("conditions", [])
            )
            if (
                name not in ready_at
                and ready
                and st.get("observedGeneration") == obj["metadata"]["generation"]
            ):
                ready_at[name] = now - t0
        time.sleep(0.25)
    all_ready_s = time.monotonic() - t0
    missing = sorted(set(names) - set(ready_at))
    assert not missing, (
        f"{len(missing)} of {GROUPS} groups not Ready after {all_ready_s:.0f}s: {missing[:10]}"
    )

    time.sleep(1.0)
    writes_before = op.writes()
    time.sleep(2 * RESYNC + 1)
    metrics = op.metrics()
    idle_writes = op.writes() - writes_before
    memory = status_rss(op.proc.pid)
    pods = kube.pods(namespace)
    report(
        "load",
        groups=GROUPS,
        ranks_per_group=RANKS,
        pods=len(pods),
        apply_ms=round(applied_s * 1000),
        all_ready_ms=round(max(ready_at.values()) * 1000),
        apply_to_ready_ms={k: round(v * 1000) for k, v in percentiles(list(ready_at.values())).items()},
        reconcile_ms=histogram_quantiles(metrics, "wideep_reconcile_duration_seconds"),
        reconciles=int(metrics.get("wideep_reconcile_duration_seconds_count", 0)),
        reconcile_errors=metrics.get("wideep_reconcile_errors_total", 0),
        api_writes=op.writes(),
        writes_in_two_idle_resyncs=idle_writes,
        operator_rss_mib={
            "idle": idle.get("VmRSS"),
            "after": memory.get("VmRSS"),
            "peak": memory.get("VmHWM"),
        },
    )
    assert len(pods) == GROUPS * RANKS
    assert idle_writes == 0, f"{idle_writes} writes while {GROUPS} groups sat Ready"
    assert memory["VmHWM"] < _chart_memory_limit_mib(), (
        "the operator would be OOM-killed under the chart's limit"
    )
    bad = unexpected_log_lines(op.log())
    assert not bad, "\n".join(bad[:20])
    purge(cluster, namespace)
