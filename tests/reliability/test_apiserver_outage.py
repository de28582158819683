"""API server outage: kube-apiserver is stopped in the middle of a reconcile (SIGTERM, SIGKILL after 1 s) and
started again on the same port with the same flags; etcd keeps its data. The operator process must survive,
reconnect its watches and its client, and converge to exactly the planned pods: no duplicate ranks, no extra
pods, and no gang restart caused by the outage itself (one failed rank: exactly one restart).

Two outages: while a 64-rank group is being created, and while a gang restart recreates it.

Harness notes. kube-scheduler v1.36 exits on purpose when an API server restart leaves its cache inconsistent
("Scheduler cache is corrupted", klog.FlushAndExit); the test starts any exited component again, as a kubelet
would. The second outage begins once the old generation's pods are gone: kwok deletes terminating pods by name
without a UID precondition and retries through the outage, so it would delete the new pod that took the same
name (a kubelet deletes with the pod's UID as precondition) -- that would be a real rank deletion, and a second
gang restart the right answer to it.

``WIDEEP_OUTAGE_RANKS`` (default 64), ``WIDEEP_OUTAGE_SECONDS`` (default 4), ``WIDEEP_RELIABILITY_SEED``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest

from devcluster.cluster import LocalCluster
from tests.support.builders import on_pool, pdep
from tests.support.kube import Kube
from tests.support.reliability import (
    Operators,
    convergence_problems,
    purge,
    report,
    unexpected_log_lines,
    wait_converged,
)
from tests.support.waits import wait_until
from wideep.api import constants as c

RANKS = int(os.environ.get("WIDEEP_OUTAGE_RANKS", "64"))
DOWNTIME = float(os.environ.get("WIDEEP_OUTAGE_SECONDS", "4"))
SEED = int(os.environ.get("WIDEEP_RELIABILITY_SEED", str(random.randrange(1 << 30))))


def _outage(cluster: LocalCluster, alive: object) -> float:
    """Stop kube-apiserver, stay down DOWNTIME seconds (checking the operator stays up), start it; returns the
    seconds the API was unreachable."""
    t0 = time.monotonic()
    cluster.stop_component("kube-apiserver", grace=1.0)  # a crash more than a drain: no time to finish
    try:
        deadline = time.monotonic() + DOWNTIME
        while time.monotonic() < deadline:
            alive()  # type: ignore[operator]
            time.sleep(0.2)
    finally:
        cluster.start_component("kube-apiserver")
    return time.monotonic() - t0


@pytest.fixture
def healthy_control_plane(cluster: LocalCluster) -> Iterator[None]:
    """Whatever happens in the test, the session's control plane is whole afterwards."""
    yield
    for component in cluster.exited_components():
        cluster.start_component(component)


@pytest.mark.slow
def test_operator_rides_out_apiserver_restarts_during_creation_and_gang_restart(
    cluster: LocalCluster,
    kube: Kube,
    operators: Operators,
    namespace: str,
    gpu_pool: str,
    healthy_control_plane: None,
) -> None:
    rng = random.Random(SEED)
    op = operators.start([namespace])
    revived: list[str] = []

    def supervise() -> None:
        """The operator must be up; a control-plane component that exited is started again, as a kubelet
        would (kube-scheduler exits on purpose when an API server restart leaves its cache inconsistent)."""
        op.alive()
        for component in cluster.exited_components():
            revived.append(component)
            cluster.start_component(component)

    name = "outage"
    assert kube.apply(on_pool(pdep(name, namespace, dp=RANKS), gpu_pool)).returncode == 0

    # 1. Down while the group is being created.
    created_before = rng.randint(RANKS // 8, RANKS * 3 // 4)
    wait_until(
        f"{created_before} pods created",
        lambda: len(kube.pods(namespace, name)) >= created_before,
        timeout=90,
        interval=0.02,
    )
    seen = len(kube.pods(namespace, name))
    down1 = _outage(cluster, op.alive)
    converge1 = wait_converged(kube, namespace, name, ranks=RANKS, timeout=180, alive=supervise)
    obj = kube.get_pdep(namespace, name)
    assert obj is not None
    assert obj["status"]["groupRestarts"] == 0 and obj["status"]["groupGeneration"] == 1, (
        f"the outage was taken for a rank failure: {obj['status'].get('lastRestartReason')}"
    )

    # 2. Down while a gang restart deletes and recreates the group.
    victim = rng.randrange(RANKS)
    kube.fail_pod(namespace, f"{name}-{victim}")

    def old_generation_gone() -> bool:
        st = (kube.get_pdep(namespace, name) or {}).get("status") or {}
        pods = kube.pods(namespace, name)
        return st.get("groupGeneration") == 2 and all(
            p["metadata"]["annotations"].get(c.ANNOTATION_GROUP_GENERATION) == "2" for p in pods
        )

    # Down once the old pods are gone, while the new generation is being created. (Not while old pods are
    # still terminating: kwok then retries its delete-by-name, without a UID precondition, through the outage
    # and hits the new pod of the same name; a kubelet deletes with a UID precondition.)
    wait_until("the old generation deleted", old_generation_gone, timeout=90, interval=0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    left = len(kube.live_pods(namespace, name))
    down2 = _outage(cluster, op.alive)
    converge2 = wait_converged(kube, namespace, name, ranks=RANKS, timeout=180, alive=supervise)
    obj = kube.get_pdep(namespace, name)
    assert obj is not None
    st = obj["status"]
    metrics = op.metrics()
    report(
        "apiserver_outage",
        seed=SEED,
        ranks=RANKS,
        outages=2,
        faults_survived=2,
        pods_created_when_down=seen,
        new_pods_when_down=left,
        api_down_ms=[round(down1 * 1000), round(down2 * 1000)],
        converged_after_ms=[round(converge1 * 1000), round(converge2 * 1000)],
        reconcile_errors=metrics.get("wideep_reconcile_errors_total", 0),
        control_plane_components_revived=revived,
        group_restarts=st["groupRestarts"],
        group_generation=st["groupGeneration"],
    )
    assert st["groupRestarts"] == 1 and st["groupGeneration"] == 2, (
        f"one failed rank must restart the group exactly once: {st['groupRestarts']} restarts, "
        f"generation {st['groupGeneration']}"
    )
    assert st["ranks"][victim]["lastFailure"]["pod"] == f"{name}-{victim}"
    assert not convergence_problems(kube, namespace, name, ranks=RANKS)
    assert kube.condition(namespace, name, c.COND_DEGRADED)["status"] == "False"  # type: ignore[index]
    bad = unexpected_log_lines(op.log())
    assert not bad, "\n".join(bad[:20])
    purge(cluster, namespace)
