"""End-to-end: `wideep run` against the real local control plane (kwok drives the pods)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import LocalCluster
from tests.support.builders import load_example, pdep
from tests.support.cluster import create_namespace, delete_namespace
from tests.support.kube import PDEPS, Kube, Watcher, uids
from tests.support.operator import Operator
from tests.support.waits import wait_until
from wideep.api import constants as c
from wideep.api.crd import crd as make_crd
from wideep.api.derived import vllm_config_hash
from wideep.api.validate import validate_object
from wideep.planning.planner import plan

EXAMPLES = {
    "deepseek-v3-wide-ep.yaml": 16,
    "hybrid-dp16-local8.yaml": 2,
    "tp2-external-lb.yaml": 4,
    "torchrun-offline.yaml": 8,
}


@pytest.mark.parametrize(("example_file", "n_pods"), sorted(EXAMPLES.items()))
def test_example_reaches_ready_with_planned_ranks(
    kube: Kube, operator: Operator, namespace: str, example_file: str, n_pods: int
) -> None:
    obj = load_example(example_file, namespace)
    name = obj["metadata"]["name"]
    assert kube.apply(obj).returncode == 0
    ready = kube.wait_ready(namespace, name)
    pods = kube.live_pods(namespace, name)
    assert len(pods) == n_pods
    # Every pod is exactly what the planner says for its index.
    verdict = validate_object(ready)
    assert verdict.obj is not None
    planned = {p.name: p for p in plan(verdict.obj, group_generation=1).pods}
    for pod in pods:
        want = planned[pod["metadata"]["name"]]
        labels = pod["metadata"]["labels"]
        assert labels[c.LABEL_DP_RANK] == str(want.dp_ranks[0])
        assert labels[c.LABEL_POD_INDEX] == str(want.index)
        ctr = pod["spec"]["containers"][0]
        assert ctr["args"] == want.body["spec"]["containers"][0]["args"]
        assert pod["metadata"]["ownerReferences"][0]["uid"] == ready["metadata"]["uid"]
    st = ready["status"]
    assert st["ready"] == f"{st['totalRanks']}/{st['totalRanks']}"
    assert [r["pod"] for r in st["ranks"]] == [f"{name}-{i}" for i in range(n_pods)]
    assert all(r["ready"] and r["phase"] == "Running" and r["node"] for r in st["ranks"])
    assert st["configHash"] == vllm_config_hash(verdict.obj.spec.parallel_config)
    reasons = [e["reason"] for e in kube.events(namespace, name)]
    assert c.EVENT_GROUP_CREATED in reasons


def test_one_failed_rank_restarts_the_whole_group_once(
    cluster: LocalCluster, kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(pdep("gang", namespace, dp=4))
    kube.wait_ready(namespace, "gang")
    before = kube.live_pods(namespace, "gang")
    with PodWatcher(cluster, namespace) as pod_watch, Watcher(cluster, namespace, PDEPS) as status_watch:
        kube.fail_pod(namespace, "gang-2")
        wait_until("the first delete", lambda: len(kube.live_pods(namespace, "gang")) < 4, timeout=60)
        time.sleep(0.3)
    assert recorded_before_first_delete(status_watch, pod_watch, 2), (
        "a pod was deleted before the restart was recorded"
    )

    def restarted() -> bool:
        obj = kube.get_pdep(namespace, "gang") or {}
        st = obj.get("status") or {}
        pods = kube.live_pods(namespace, "gang")
        return (
            st.get("groupRestarts") == 1
            and len(pods) == 4
            and not (uids(pods) & uids(before))
            and kube.is_ready(namespace, "gang")
        )

    wait_until("group recreated", restarted, timeout=60)
    time.sleep(2)  # once per incident: no second restart follows
    obj = kube.get_pdep(namespace, "gang")
    assert obj is not None
    st = obj["status"]
    assert st["groupRestarts"] == 1 and st["groupGeneration"] == 2
    failure = st["ranks"][2]["lastFailure"]
    assert failure["pod"] == "gang-2" and failure["exitCode"] == 1 and failure["container"] == "vllm"
    events = kube.events(namespace, "gang")
    failed = [e for e in events if e["reason"] == c.EVENT_RANK_FAILED]
    assert len(failed) == 1 and failed[0]["type"] == "Warning"
    assert "exit code 1" in failed[0]["message"]
    assert len([e for e in events if e["reason"] == c.EVENT_GROUP_RESTARTED]) == 1
    assert all(
        p["metadata"]["annotations"][c.ANNOTATION_GROUP_GENERATION] == "2"
        for p in kube.live_pods(namespace, "gang")
    )


def test_budget_exhausted_stops_restarting(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(pdep("budget", namespace, dp=2, max_restarts=1))
    kube.wait_ready(namespace, "budget")
    kube.fail_pod(namespace, "budget-0")
    wait_until(
        "first restart",
        lambda: ((kube.get_pdep(namespace, "budget") or {}).get("status") or {}).get("groupRestarts") == 1,
    )
    kube.wait_ready(namespace, "budget")
    kube.fail_pod(namespace, "budget-1")

    def exhausted() -> bool:
        cond = kube.condition(namespace, "budget", c.COND_READY)
        return bool(cond and cond["reason"] == c.REASON_RESTART_BUDGET_EXHAUSTED)

    wait_until("RestartBudgetExhausted", exhausted, timeout=60)
    pods = kube.pods(namespace, "budget")
    snapshot = {p["metadata"]["uid"]: p["status"].get("phase") for p in pods}
    time.sleep(8)  # two resync periods: no churn
    assert {
        p["metadata"]["uid"]: p["status"].get("phase") for p in kube.pods(namespace, "budget")
    } == snapshot
    assert "Failed" in snapshot.values()
    obj = kube.get_pdep(namespace, "budget")
    assert obj is not None
    assert obj["status"]["groupRestarts"] == 1
    assert kube.condition(namespace, "budget", c.COND_DEGRADED)["status"] == "True"  # type: ignore[index]
    events = [e for e in kube.events(namespace, "budget") if e["reason"] == c.EVENT_BUDGET_EXHAUSTED]
    assert len(events) == 1
    # A retry (new annotation value) resets the budget and restarts the group.
    kube.cluster.api(
        "PATCH",
        f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}/budget",
        {"metadata": {"annotations": {c.ANNOTATION_RETRY: "1"}}},
        content_type="application/merge-patch+json",
    )
    kube.wait_ready(namespace, "budget", timeout=60)
    assert not (uids(kube.live_pods(namespace, "budget")) & set(snapshot))


def test_deleted_rank_pod_recreates_group(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(pdep("del", namespace, dp=3))
    kube.wait_ready(namespace, "del")
    before = uids(kube.live_pods(namespace, "del"))
    kube.cluster.api("DELETE", f"/api/v1/namespaces/{namespace}/pods/del-1")
    wait_until(
        "group recreated",
        lambda: kube.replaced(namespace, "del", before, 3),
    )
    obj = kube.get_pdep(namespace, "del")
    assert obj is not None and obj["status"]["groupRestarts"] == 1
    assert obj["status"]["ranks"][1]["lastFailure"]["reason"] == "Deleted"


def test_a_new_group_comes_up_in_two_passes(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """One pass creates the pods and Services; the pass after the last pod turns Ready writes Ready=True. The
    watch's echoes of our own creates and status write, which often come before their answers, start no pass
    (before: 3 or 4 passes). Resyncs and progress-only passes are put out of the way (600 s and 30 s)."""
    extra = ["--resync-seconds", "600", "--status-progress-seconds", "30"]
    op = Operator(cluster, [namespace], tmp_path, extra=extra).start()
    try:
        passes = "wideep_reconcile_duration_seconds_count"
        before = op.metrics().get(passes, 0.0)
        kube.apply(pdep("two", namespace, dp=8))
        kube.wait_ready(namespace, "two")
        wait_until("the Ready pass counted", lambda: op.metrics()[passes] - before >= 2, timeout=10)
        time.sleep(1.0)
        assert op.metrics()[passes] - before == 2
        assert len(kube.live_pods(namespace, "two")) == 8
    finally:
        op.stop()
        kube.delete_all(namespace)


def test_rank_pod_moved_to_another_group_restarts_the_group_it_left(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """Someone points a rank pod's controller ownerReference at another group. The group it left lost a rank
    and restarts at once, not at its next resync (10 minutes here); the group it was given deletes the pod,
    which is not in its plan."""
    op = Operator(cluster, [namespace], tmp_path, extra=["--resync-seconds", "600"]).start()
    try:
        kube.apply(pdep("left", namespace, dp=2))
        kube.apply(pdep("given", namespace, dp=2))
        kube.wait_ready(namespace, "left")
        kube.wait_ready(namespace, "given")
        left, given = kube.get_pdep(namespace, "left"), kube.get_pdep(namespace, "given")
        assert left is not None and given is not None
        ref = {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "name": "given",
            "uid": given["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        moved = kube.cluster.api(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/left-1",
            {"metadata": {"ownerReferences": [ref]}},
            content_type="application/merge-patch+json",
        )

        def owned_by(owner: dict[str, Any]) -> set[str]:
            return {
                p["metadata"]["name"]
                for p in kube.cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
                if not p["metadata"].get("deletionTimestamp")
                and any(r["uid"] == owner["metadata"]["uid"] for r in p["metadata"]["ownerReferences"])
            }

        wait_until(
            "the group that lost a rank restarted and Ready",
            lambda: (
                owned_by(left) == {"left-0", "left-1"}
                and (kube.get_pdep(namespace, "left") or {}).get("status", {}).get("groupRestarts") == 1
                and kube.is_ready(namespace, "left")
            ),
            timeout=30,
        )
        wait_until("the group given the pod deleted it", lambda: owned_by(given) == {"given-0", "given-1"})
        left_status = (kube.get_pdep(namespace, "left") or {}).get("status") or {}
        assert left_status["lastRestartReason"].startswith("rank pod left-1 is gone")
        assert moved["metadata"]["uid"] not in uids(kube.pods(namespace))
        assert kube.is_ready(namespace, "given")
    finally:
        op.stop()
        kube.delete_all(namespace)


def test_watches_never_take_the_connections_of_api_calls(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """Every watched namespace holds two watch streams open (pods, Services). With more streams than API calls
    allowed in flight (here 3 namespaces, 6 streams, --concurrency 4), a watch must not hold a connection
    that an API call waits for: the operator still creates and reports the group."""
    others = [create_namespace(cluster) for _ in range(2)]
    op = Operator(cluster, [namespace, *others], tmp_path, extra=["--concurrency", "4"]).start()
    try:
        kube.apply(pdep("few", namespace, dp=8))
        kube.wait_ready(namespace, "few", timeout=30)
        assert len(kube.live_pods(namespace, "few")) == 8
    finally:
        op.stop()
        kube.delete_all(namespace)
        for ns in others:
            delete_namespace(cluster, ns)


def recorded_before_first_delete(pdeps: Watcher, pods: Watcher, group_generation: int) -> bool:
    """Whether the new group generation reached the API server before any pod of the old one was deleted."""
    status_rv = pdeps.first_rv(
        lambda _t, o: (o.get("status") or {}).get("groupGeneration") == group_generation
    )
    delete_rv = pods.first_rv(lambda t, o: t == "DELETED" or bool(o["metadata"].get("deletionTimestamp")))
    return status_rv < delete_rv


class PodWatcher(Watcher):
    """Pod events of a namespace, to prove old and new ranks never coexist."""

    def max_generations_alive(self) -> int:
        """The largest number of distinct template hashes among pods existing at the same moment."""
        alive: dict[str, str] = {}
        worst = 0
        for typ, obj in self.events:
            uid = obj["metadata"]["uid"]
            if typ == "DELETED":
                alive.pop(uid, None)
            else:
                alive[uid] = obj["metadata"]["labels"].get(c.LABEL_TEMPLATE_HASH, "")
            worst = max(worst, len(set(alive.values())))
        return worst


def test_template_change_replaces_group_without_overlap(
    cluster: LocalCluster, kube: Kube, operator: Operator, namespace: str
) -> None:
    obj = pdep("roll", namespace, dp=4)
    kube.apply(obj)
    kube.wait_ready(namespace, "roll")
    before = uids(kube.live_pods(namespace, "roll"))
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.11.2"
    with PodWatcher(cluster, namespace) as watcher, Watcher(cluster, namespace, PDEPS) as status_watch:
        assert kube.apply(obj).returncode == 0
        wait_until(
            "replacement Ready",
            lambda: kube.replaced(namespace, "roll", before, len(before)),
        )
        time.sleep(0.5)
    assert watcher.events, "the watch saw nothing"
    assert watcher.max_generations_alive() == 1, "old and new rank pods existed at the same time"
    assert recorded_before_first_delete(status_watch, watcher, 2), (
        "an old pod was deleted before the replacement was recorded"
    )
    pods = kube.live_pods(namespace, "roll")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"vllm/vllm-openai:v0.11.2"}
    reasons = [e["reason"] for e in kube.events(namespace, "roll")]
    assert c.EVENT_GROUP_REPLACED in reasons
    st = (kube.get_pdep(namespace, "roll") or {})["status"]
    assert st["groupRestarts"] == 0 and st["lastGroupChange"] == "Replaced"


def test_label_change_is_applied_in_place(kube: Kube, operator: Operator, namespace: str) -> None:
    obj = pdep("inplace", namespace, dp=3)
    kube.apply(obj)
    kube.wait_ready(namespace, "inplace")
    before = uids(kube.live_pods(namespace, "inplace"))
    obj["spec"]["template"]["metadata"]["labels"]["team"] = "inference"
    assert kube.apply(obj).returncode == 0
    wait_until(
        "label on every pod",
        lambda: all(
            p["metadata"]["labels"].get("team") == "inference" for p in kube.live_pods(namespace, "inplace")
        ),
    )
    assert uids(kube.live_pods(namespace, "inplace")) == before
    kube.wait_ready(namespace, "inplace")


def test_invalid_object_past_admission_leaves_group_untouched(
    cluster: LocalCluster, kube: Kube, operator: Operator, namespace: str
) -> None:
    obj = pdep("slipped", namespace, dp=2)
    kube.apply(obj)
    kube.wait_ready(namespace, "slipped")
    before = uids(kube.live_pods(namespace, "slipped"))
    # An older CRD without the CEL rules lets an invalid spec in.
    loose = make_crd()
    schema = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["properties"]["parallelConfig"].pop("x-kubernetes-validations")
    try:
        assert kube.apply(loose).returncode == 0
        bad = pdep("slipped", namespace, dp=2, enableEplb=True, enableExpertParallel=False)

        def accepted() -> bool:
            return kube.apply(bad).returncode == 0

        wait_until("the loose CRD in force", accepted, timeout=30, interval=0.5)
    finally:
        assert kube.apply(make_crd()).returncode == 0
    wait_until(
        "Valid=False",
        lambda: (kube.condition(namespace, "slipped", c.COND_VALID) or {}).get("status") == "False",
    )
    cond = kube.condition(namespace, "slipped", c.COND_VALID)
    assert cond is not None and cond["reason"] == c.REASON_INVALID_SPEC
    assert "spec.parallelConfig.enableEplb" in cond["message"] and "eplb-needs-ep" in cond["message"]
    time.sleep(4)
    assert uids(kube.live_pods(namespace, "slipped")) == before
    assert any(e["reason"] == c.EVENT_INVALID_SPEC for e in kube.events(namespace, "slipped"))


def test_update_whose_pods_the_api_server_refuses_leaves_group_untouched(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    obj = pdep("refused", namespace, dp=3)
    kube.apply(obj)
    kube.wait_ready(namespace, "refused")
    before = uids(kube.live_pods(namespace, "refused"))
    # Admission takes it (a pod template is not the pod), the pod validation does not: no volume "dshm".
    good_spec = obj["spec"]["template"]["spec"]
    obj["spec"]["template"]["spec"] = {
        **good_spec,
        "containers": [
            {**good_spec["containers"][0], "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}
        ],
    }
    assert kube.apply(obj).returncode == 0
    wait_until(
        "Valid=False",
        lambda: (
            (kube.condition(namespace, "refused", c.COND_VALID) or {}).get("reason") == c.REASON_POD_REJECTED
        ),
    )
    cond = kube.condition(namespace, "refused", c.COND_VALID)
    assert cond is not None and cond["status"] == "False" and cond["observedGeneration"] == 2
    assert "volumeMounts[0].name" in cond["message"] and "dshm" in cond["message"], cond["message"]
    time.sleep(3)
    assert uids(kube.live_pods(namespace, "refused")) == before, "the running group was touched"
    assert kube.is_ready(namespace, "refused")
    st = (kube.get_pdep(namespace, "refused") or {})["status"]
    assert (st["groupGeneration"], st["lastGroupChange"]) == (1, "Created")
    warnings = [e for e in kube.events(namespace, "refused") if e["reason"] == c.EVENT_INVALID_SPEC]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    # Fixed: the replacement goes ahead at once.
    obj["spec"]["template"]["spec"]["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert kube.apply(obj).returncode == 0
    wait_until(
        "the fixed spec replaces the group",
        lambda: kube.replaced(namespace, "refused", before, 3),
        timeout=60,
    )
    assert (kube.condition(namespace, "refused", c.COND_VALID) or {}).get("status") == "True"


def test_port_change_leaves_services_with_exactly_the_new_ports(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    # The Services are created by POST; the apply that changes a port must also drop the old one.
    obj = pdep("ports", namespace, dp=2)
    kube.apply(obj)
    kube.wait_ready(namespace, "ports")

    def ports() -> dict[str, set[int]]:
        return {
            s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
            for s in kube.services(namespace, "ports")
        }

    assert ports()["ports-master"] == {29550, 29500}
    obj["spec"]["parallelConfig"]["dataParallelRpcPort"] = 29551
    assert kube.apply(obj).returncode == 0
    wait_until("the new port on the master Service", lambda: 29551 in ports()["ports-master"], timeout=60)
    kube.wait_ready(namespace, "ports")
    got = ports()
    assert got["ports-master"] == {29551, 29500} and got["ports-ranks"] == {29551, 29500}, got
    for svc in kube.services(namespace, "ports"):
        mine = [e["operation"] for e in svc["metadata"]["managedFields"] if e["manager"] == c.FIELD_MANAGER]
        changed = svc["metadata"]["name"] in ("ports-master", "ports-ranks")
        assert mine == (["Apply"] if changed else ["Update"]), (svc["metadata"]["name"], mine)


def test_delete_garbage_collects_children(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(pdep("gc", namespace, dp=2))
    kube.wait_ready(namespace, "gc")
    assert kube.services(namespace, "gc")
    assert operator.stop() == 0  # clean exit on SIGTERM; children are still garbage-collected: no finalizer
    obj = kube.get_pdep(namespace, "gc")
    assert obj is not None and not obj["metadata"].get("finalizers")
    kube.cluster.api("DELETE", f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}/gc")
    wait_until(
        "children gone",
        lambda: not kube.pods(namespace, "gc") and not kube.services(namespace, "gc"),
        timeout=60,
    )


def test_scale_subresource_rerolls_with_new_dp(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(pdep("scale", namespace, dp=2))
    kube.wait_ready(namespace, "scale")
    before = uids(kube.live_pods(namespace, "scale"))
    proc = kube.kubectl("scale", "-n", namespace, "pdep/scale", "--replicas", "4")
    assert proc.returncode == 0, proc.stderr
    wait_until(
        "4 ranks Ready",
        lambda: kube.is_ready(namespace, "scale") and len(kube.live_pods(namespace, "scale")) == 4,
    )
    pods = kube.live_pods(namespace, "scale")
    assert not (uids(pods) & before)
    assert all("--data-parallel-size" in p["spec"]["containers"][0]["args"] for p in pods)
    for p in pods:
        args = p["spec"]["containers"][0]["args"]
        assert args[args.index("--data-parallel-size") + 1] == "4"
    # The group's three Services whatever the size: no Service per rank.
    assert sorted(s["metadata"]["name"] for s in kube.services(namespace, "scale")) == [
        "scale-http",
        "scale-master",
        "scale-ranks",
    ]
    # Invalid scale (hybrid LB needs DP divisible by the local size) is refused by the API server.
    obj = kube.get_pdep(namespace, "scale")
    assert obj is not None and obj["status"]["replicas"] == 4


def test_insufficient_capacity_is_reported_without_restart_loop(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    # 5 pods x 8 GPUs on 4 nodes x 8 GPUs: one rank cannot be scheduled.
    kube.apply(pdep("big", namespace, dp=5, tp=8))

    def insufficient() -> dict[str, Any] | None:
        cond = kube.condition(namespace, "big", c.COND_PROGRESSING)
        return cond if cond and cond["reason"] == c.REASON_INSUFFICIENT_CAPACITY else None

    cond = wait_until("InsufficientCapacity", insufficient, timeout=60)
    assert "8 more nvidia.com/gpu needed" in cond["message"]
    before = uids(kube.pods(namespace, "big"))
    time.sleep(6)
    obj = kube.get_pdep(namespace, "big")
    assert obj is not None and obj["status"]["groupRestarts"] == 0
    assert uids(kube.pods(namespace, "big")) == before
    ready = kube.condition(namespace, "big", c.COND_READY)
    assert (
        ready is not None and ready["status"] == "False" and ready["reason"] == c.REASON_INSUFFICIENT_CAPACITY
    )


def test_noop_resync_makes_zero_writes(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(pdep("idle", namespace, dp=4))
    kube.wait_ready(namespace, "idle")
    time.sleep(1.5)
    start = operator.writes()
    time.sleep(7)  # two resyncs (--resync-seconds 3) of a Ready group
    assert operator.writes() == start
    durations = operator.metrics()
    assert durations["wideep_reconcile_duration_seconds_count"] > 2


def test_deprecated_field_warns_at_admission_and_in_an_event(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    obj = pdep("old", namespace, dp=2, enableEplb=True, numRedundantExperts=2)
    proc = kube.apply(obj)
    assert proc.returncode == 0, proc.stderr
    assert "numRedundantExperts is deprecated" in proc.stderr
    kube.wait_ready(namespace, "old")
    wait_until(
        "DeprecatedField event",
        lambda: any(e["reason"] == c.EVENT_DEPRECATED_FIELD for e in kube.events(namespace, "old")),
    )
    pod = kube.live_pods(namespace, "old")[0]
    args = pod["spec"]["containers"][0]["args"]
    assert json.loads(args[args.index("--eplb-config") + 1])["num_redundant_experts"] == 2
