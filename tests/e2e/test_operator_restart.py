"""The operator process dies and comes back: the cluster converges to exactly the plan."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import LocalCluster
from tests.support.builders import on_pool, pdep
from tests.support.cluster import tainted_pool
from tests.support.kube import Kube, uids
from tests.support.operator import Operator
from tests.support.waits import wait_until
from wideep.api import constants as c

BIG_POOL = "wideep-test-big"


@pytest.fixture(scope="module")
def big_pool(cluster: LocalCluster) -> Iterator[str]:
    """32 extra fake nodes x 8 GPUs, tainted so that only tests asking for them land there."""
    with tainted_pool(cluster, BIG_POOL, 32) as value:
        yield value


def test_killed_mid_creation_converges_to_exactly_256_pods(
    cluster: LocalCluster, kube: Kube, namespace: str, big_pool: str, tmp_path: Path
) -> None:
    op = Operator(cluster, [namespace], tmp_path).start()
    try:
        kube.apply(on_pool(pdep("wide", namespace, dp=256), big_pool))
        wait_until(
            "some pods created", lambda: len(kube.pods(namespace, "wide")) >= 20, timeout=60, interval=0.02
        )
        op.kill()
        partial = len(kube.pods(namespace, "wide"))
        op = Operator(cluster, [namespace], tmp_path).start()
        kube.wait_ready(namespace, "wide", timeout=240)
        pods = kube.live_pods(namespace, "wide")
        assert len(pods) == 256
        assert sorted(int(p["metadata"]["labels"][c.LABEL_DP_RANK]) for p in pods) == list(range(256))
        assert len({p["metadata"]["name"] for p in pods}) == 256
        obj = kube.get_pdep(namespace, "wide")
        assert obj is not None
        # No orphans: every pod is owned by this ParallelDeployment, and nothing restarted the group.
        assert all(p["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"] for p in pods)
        assert obj["status"]["groupRestarts"] == 0 and obj["status"]["groupGeneration"] == 1
        assert len(kube.services(namespace, "wide")) == 3
        print(f"killed with {partial} of 256 pods created; converged to 256")
    finally:
        op.stop()
        kube.delete_all(namespace, timeout=180)


def test_operator_restart_leaves_a_ready_group_alone(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    op = Operator(cluster, [namespace], tmp_path).start()
    try:
        kube.apply(pdep("steady", namespace, dp=8))
        kube.wait_ready(namespace, "steady")
        before = uids(kube.live_pods(namespace, "steady"))
        op.stop()
        op = Operator(cluster, [namespace], tmp_path).start()
        time.sleep(4)
        writes = op.writes()
        assert uids(kube.live_pods(namespace, "steady")) == before
        assert kube.is_ready(namespace, "steady")
        assert writes == 0, f"a restarted operator wrote {writes} times to a converged group"
    finally:
        op.stop()
        kube.delete_all(namespace)
