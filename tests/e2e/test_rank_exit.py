"""End-to-end: a rank whose process ends with exit code 0 is a lost rank like a failed one.

Real vLLM (docs/api.md, "What counts as a lost rank") ends a surviving DP rank in order, exit code 0, once a peer died; with the rank
pods' restartPolicy Never the pod is then Succeeded. kwok drives a pod there with wideep's own stage
(devcluster/stages/pod-exited.yaml)."""

from __future__ import annotations

import time

from devcluster.cluster import LocalCluster
from tests.support.builders import on_pool, pdep
from tests.support.cluster import add_pool_node, tainted_pool
from tests.support.kube import Kube, uids
from tests.support.operator import Operator
from tests.support.waits import wait_until
from wideep.api import constants as c

SHUTDOWN = "EngineCore encountered an issue. See stack trace (above) for the root cause."


def _status(kube: Kube, ns: str, name: str) -> dict[str, object]:
    return dict(((kube.get_pdep(ns, name) or {}).get("status")) or {})


def test_a_rank_that_exits_0_restarts_the_group_once(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(pdep("clean", namespace, dp=3))
    kube.wait_ready(namespace, "clean")
    before = uids(kube.live_pods(namespace, "clean"))
    kube.exit_pod(namespace, "clean-1", SHUTDOWN)
    wait_until("group recreated", lambda: kube.replaced(namespace, "clean", before, 3), timeout=60)
    time.sleep(2)  # once per incident: no second restart follows
    st = _status(kube, namespace, "clean")
    assert st["groupRestarts"] == 1 and st["groupGeneration"] == 2
    assert st["lastRestartReason"] == "rank pod clean-1 exited (exit code 0, container vllm)"
    failure = st["ranks"][1]["lastFailure"]  # type: ignore[index]
    assert (failure["pod"], failure["exitCode"], failure["reason"], failure["container"]) == (
        "clean-1",
        0,
        "Completed",
        "vllm",
    )
    assert failure["message"] == SHUTDOWN
    events = kube.events(namespace, "clean")
    lost = [e for e in events if e["reason"] == c.EVENT_RANK_FAILED]
    assert len(lost) == 1 and lost[0]["type"] == "Warning"
    assert lost[0]["message"].startswith("rank pod clean-1 exited: Completed, exit code 0, container vllm")
    assert len([e for e in events if e["reason"] == c.EVENT_GROUP_RESTARTED]) == 1


def test_a_rank_that_exits_0_while_the_group_comes_up(
    cluster: LocalCluster, kube: Kube, operator: Operator, namespace: str
) -> None:
    """The group is not Ready yet (one rank cannot be scheduled: 3 GPUs for 4 ranks): a rank that exits then
    is an incident too, not hidden behind InsufficientCapacity. Once the capacity is there, the group (one
    restart later) is Ready."""
    pool = f"exit-{namespace}"
    with tainted_pool(cluster, pool, 1, gpus=3):
        kube.apply(on_pool(pdep("early", namespace, dp=4), pool))

        def waiting_for_capacity() -> bool:
            cond = kube.condition(namespace, "early", c.COND_READY)
            return bool(cond and cond["reason"] == c.REASON_INSUFFICIENT_CAPACITY)

        wait_until("InsufficientCapacity", waiting_for_capacity, timeout=60)
        running = [p for p in kube.live_pods(namespace, "early") if p["status"].get("phase") == "Running"]
        assert len(running) == 3
        before = uids(kube.live_pods(namespace, "early"))
        kube.exit_pod(namespace, running[0]["metadata"]["name"])

        def restarted() -> bool:
            live = kube.live_pods(namespace, "early")
            return (
                _status(kube, namespace, "early").get("groupRestarts") == 1
                and bool(live)
                and not (uids(live) & before)
            )

        wait_until("the group restarted", restarted, timeout=60)
        assert "exited (exit code 0" in str(_status(kube, namespace, "early")["lastRestartReason"])
        add_pool_node(cluster, pool, f"{pool}-extra", gpus=1)
        try:
            kube.wait_ready(namespace, "early", timeout=60)
            st = _status(kube, namespace, "early")
            assert st["groupRestarts"] == 1 and st["groupGeneration"] == 2
        finally:
            kube.delete_all(namespace)
            cluster.request("DELETE", f"/api/v1/nodes/{pool}-extra")
