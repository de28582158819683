"""A new group's first status waits while the group comes up (``--status-progress-seconds``): written once
the group is Ready or when the hold ends, whichever is first; a group that cannot come up is reported at once."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import LocalCluster
from tests.support.builders import pdep
from tests.support.kube import PDEPS, Kube, Watcher
from tests.support.operator import Operator
from tests.support.waits import wait_until
from wideep.api import constants as c


@contextlib.contextmanager
def operator_holding(
    cluster: LocalCluster, kube: Kube, namespace: str, log_dir: Path, seconds: float
) -> Iterator[Operator]:
    op = Operator(cluster, [namespace], log_dir, extra=["--status-progress-seconds", str(seconds)]).start()
    try:
        yield op
    finally:
        op.stop()
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            kube.delete_all(namespace)


def status_writes(op: Operator) -> float:
    return op.metrics().get('wideep_api_writes_total{kind="status"}', 0.0)


def reasons(kube: Kube, namespace: str, name: str) -> list[str]:
    return sorted(e["reason"] for e in kube.events(namespace, name))


def statuses(watch: Watcher) -> list[tuple[float, dict[str, Any]]]:
    return [(t, o["status"]) for t, (_, o) in zip(watch.times, watch.events, strict=True) if o.get("status")]


def ready_of(status: dict[str, Any]) -> dict[str, Any]:
    return next(cd for cd in status["conditions"] if cd["type"] == c.COND_READY)


@pytest.mark.usefixtures("crd")
def test_a_group_that_comes_up_within_the_hold_writes_one_status(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    with (
        operator_holding(cluster, kube, namespace, tmp_path, 60) as op,
        Watcher(cluster, namespace, PDEPS) as watch,
    ):
        kube.apply(pdep("quick", namespace, dp=4))
        kube.wait_ready(namespace, "quick")
        wait_until("both events", lambda: len(reasons(kube, namespace, "quick")) >= 2, timeout=30)
        time.sleep(1.0)  # anything written after Ready would show now
        written = statuses(watch)
        assert status_writes(op) == 1
    assert len(written) == 1, [ready_of(s) for _, s in written]
    first = written[0][1]
    assert ready_of(first)["status"] == "True"
    # What the passes during the hold decided is in it: the group generation, its creates, no restart.
    assert (first["groupGeneration"], first["createdGeneration"], first["groupRestarts"]) == (1, 1, 0)
    # Each event once, although several passes ran while the status was held.
    assert reasons(kube, namespace, "quick") == [c.EVENT_GROUP_CREATED, c.EVENT_GROUP_READY]


@pytest.mark.usefixtures("crd")
def test_a_group_that_cannot_be_scheduled_is_reported_at_once(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    with operator_holding(cluster, kube, namespace, tmp_path, 60):
        applied = time.monotonic()
        kube.apply(pdep("big", namespace, dp=5, tp=8))  # 40 GPUs on 4 nodes x 8: one rank is unschedulable

        def insufficient() -> bool:
            cond = kube.condition(namespace, "big", c.COND_READY)
            return bool(cond and cond["reason"] == c.REASON_INSUFFICIENT_CAPACITY)

        wait_until("InsufficientCapacity", insufficient, timeout=30)
        assert time.monotonic() - applied < 30, "held like a group coming up"


@pytest.mark.usefixtures("crd")
def test_a_slow_group_writes_its_first_status_when_the_hold_ends(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    hold = 2.0
    obj = pdep("slow", namespace, dp=2)
    # Scheduling gates keep the rank pods Pending (not unschedulable): the group is coming up, slowly.
    obj["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "wideep.dev/test-hold"}]
    with (
        operator_holding(cluster, kube, namespace, tmp_path, hold) as op,
        Watcher(cluster, namespace, PDEPS) as watch,
        Watcher(cluster, namespace) as pods,
    ):
        kube.apply(obj)
        wait_until("a status", lambda: statuses(watch), timeout=30)
        created = next(t for t, (typ, _) in zip(pods.times, pods.events, strict=True) if typ == "ADDED")
        first_at, first = statuses(watch)[0]
        assert ready_of(first)["reason"] == c.REASON_RANKS_NOT_READY
        assert first["createdGeneration"] == 1
        # Held from the pass that created the pods; the watch may deliver the pod's creation late, never early.
        assert first_at - created >= hold - 0.5, f"written {first_at - created:.2f}s after the pods' creation"
        for pod in kube.pods(namespace, "slow"):
            kube.cluster.api(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}",
                {"spec": {"schedulingGates": None}},
                content_type="application/merge-patch+json",
            )
        kube.wait_ready(namespace, "slow")
        assert status_writes(op) >= 2
