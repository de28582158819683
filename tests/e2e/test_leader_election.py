"""Several operator replicas with --leader-elect: one acts, a standby takes over when it stops or dies, and a
leader that loses its Lease stops acting."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import LocalCluster
from tests.support.builders import pdep
from tests.support.kube import Kube
from tests.support.operator import Operator
from tests.support.waits import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LEASE = "wideep-test"
LEASE_SECONDS = 3
PASSES = "wideep_reconcile_duration_seconds_count"


def lease(cluster: LocalCluster, ns: str) -> dict[str, Any] | None:
    status, body = cluster.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{LEASE}")
    return body if status == 200 else None


def holder(cluster: LocalCluster, ns: str) -> str | None:
    obj = lease(cluster, ns)
    return None if obj is None else (obj.get("spec") or {}).get("holderIdentity") or None


def passes(op: Operator) -> float:
    return op.metrics().get(PASSES, 0.0)


class Replicas:
    def __init__(self, cluster: LocalCluster, ns: str, tmp_path: Path) -> None:
        self.cluster, self.ns, self.tmp_path = cluster, ns, tmp_path
        self.started: list[Operator] = []

    def start(self, who: str) -> Operator:
        log_dir = self.tmp_path / who
        log_dir.mkdir(exist_ok=True)
        op = Operator(
            self.cluster,
            [self.ns],
            log_dir,
            extra=[
                "--leader-elect",
                LEASE,
                "--leader-elect-namespace",
                self.ns,
                "--lease-seconds",
                str(LEASE_SECONDS),
            ],
            env={"POD_NAME": who},
        ).start()
        self.started.append(op)
        return op

    def leader_and_standby(self) -> tuple[Operator, Operator]:
        """replica-a, once it holds the Lease, and replica-b started after it."""
        a = self.start("replica-a")
        wait_until(
            "replica-a holds the Lease", lambda: holder(self.cluster, self.ns) == "replica-a", timeout=30
        )
        return a, self.start("replica-b")


@pytest.fixture
def replicas(
    cluster: LocalCluster, crd: None, namespace: str, kube: Kube, tmp_path: Path
) -> Iterator[Replicas]:
    r = Replicas(cluster, namespace, tmp_path)
    try:
        yield r
    finally:
        for op in r.started:
            print(f"{op.log_path}: exit code {op.stop()}")
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            kube.delete_all(namespace)


def test_one_replica_acts_and_a_standby_takes_over_when_it_stops(
    cluster: LocalCluster, kube: Kube, namespace: str, replicas: Replicas
) -> None:
    a, b = replicas.leader_and_standby()
    assert kube.apply(pdep("first", namespace, dp=2)).returncode == 0
    kube.wait_ready(namespace, "first", timeout=60)
    time.sleep(1.0)
    assert passes(a) > 0
    assert passes(b) == 0, "the standby reconciled"
    assert "waiting for the Lease" in b.log()
    assert holder(cluster, namespace) == "replica-a"

    # A clean stop releases the Lease: the standby leads within a retry period, not a Lease duration.
    assert a.proc is not None
    released = time.monotonic()
    os.killpg(a.proc.pid, signal.SIGTERM)
    wait_until("replica-b leads", lambda: holder(cluster, namespace) == "replica-b", timeout=30)
    took_over = time.monotonic() - released
    assert a.stop() == 0
    assert took_over < LEASE_SECONDS, f"took {took_over:.1f}s: the Lease was not released"
    obj = lease(cluster, namespace)
    assert obj is not None and obj["spec"]["leaseTransitions"] >= 1
    assert kube.apply(pdep("second", namespace, dp=2)).returncode == 0
    kube.wait_ready(namespace, "second", timeout=60)
    assert passes(b) > 0
    print(f"leader election: clean handover in {took_over:.2f}s")


def test_a_dead_leader_is_replaced_after_the_lease_runs_out(
    cluster: LocalCluster, kube: Kube, namespace: str, replicas: Replicas
) -> None:
    a, b = replicas.leader_and_standby()
    time.sleep(1.0)
    a.kill()  # SIGKILL: nothing released
    killed = time.monotonic()
    wait_until("replica-b leads", lambda: holder(cluster, namespace) == "replica-b", timeout=30)
    took_over = time.monotonic() - killed
    # Not before the Lease could have run out as the standby saw it; not much later either.
    assert LEASE_SECONDS * 0.6 <= took_over <= LEASE_SECONDS * 3, took_over
    assert kube.apply(pdep("after", namespace, dp=2)).returncode == 0
    kube.wait_ready(namespace, "after", timeout=60)
    assert passes(b) > 0
    print(f"leader election: takeover after SIGKILL in {took_over:.2f}s (Lease {LEASE_SECONDS}s)")


def test_a_leader_that_loses_its_lease_stops_acting_and_exits(
    cluster: LocalCluster, kube: Kube, namespace: str, replicas: Replicas
) -> None:
    a = replicas.start("replica-a")
    wait_until("replica-a holds the Lease", lambda: holder(cluster, namespace) == "replica-a", timeout=30)
    assert kube.apply(pdep("held", namespace, dp=2)).returncode == 0
    kube.wait_ready(namespace, "held", timeout=60)
    # Another party takes the Lease (as a replica would after a network partition).
    obj = lease(cluster, namespace)
    assert obj is not None
    obj["spec"]["holderIdentity"] = "intruder"
    obj["spec"]["leaseDurationSeconds"] = 300
    cluster.api("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE}", obj)
    assert a.proc is not None
    wait_until("replica-a exits", lambda: a.proc is not None and a.proc.poll() is not None, timeout=30)
    assert a.proc.returncode == 1
    assert "lost the Lease" in a.log()
    # Nothing it started is left acting: a failed rank is not restarted by anyone.
    before = {p["metadata"]["uid"] for p in kube.live_pods(namespace, "held")}
    kube.fail_pod(namespace, "held-1")
    time.sleep(2.0)
    assert {p["metadata"]["uid"] for p in kube.live_pods(namespace, "held")} == before
    assert holder(cluster, namespace) == "intruder"
