"""Pod events that only move progress figures may be batched (Cache.pop_changed, the operator's notify): that
is safe only if decide() makes the same writes and events for two versions of the pods whose
decision_facts() are equal. Checked here for pods mutated at random, progress and facts alike."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.world import World, make_pdep, make_unschedulable
from wideep.api import constants as c
from wideep.api.validate import validate_object
from wideep.kube.cache import trim
from wideep.reconcile.decide import Decision, decide
from wideep.reconcile.pods import decision_facts, pod_counts_ready
from wideep.reconcile.writes import progress_only

MUTATIONS = (
    # progress figures
    "bind",
    "run",
    "ready",
    "unready",
    "pending",
    # facts
    "fail",
    "exit0",
    "container-exited",
    "init-failed",
    "restart",
    "terminating",
    "unschedulable",
    "template-label",
    "generation-annotation",
    "owner",
    "uid",
)


def mutate(pod: dict[str, Any], what: str) -> None:
    meta, spec = pod["metadata"], pod["spec"]
    status = pod.setdefault("status", {"phase": "Pending"})
    if what == "bind":
        spec["nodeName"] = "n7"
    elif what == "run":
        spec.setdefault("nodeName", "n1")
        status["phase"] = "Running"
        status["containerStatuses"] = [{"name": "vllm", "restartCount": 0, "state": {"running": {}}}]
    elif what == "ready":
        spec.setdefault("nodeName", "n1")
        status["phase"] = "Running"
        status["conditions"] = [{"type": "Ready", "status": "True"}]
    elif what == "unready":
        status["conditions"] = [{"type": "Ready", "status": "False"}]
    elif what == "pending":
        pod["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
    elif what == "fail":
        status["phase"] = "Failed"
        status["containerStatuses"] = [
            {"name": "vllm", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
        ]
    elif what == "exit0":  # a vLLM rank that lost a DP peer shuts down in order and exits 0
        status["phase"] = "Succeeded"
        status["containerStatuses"] = [
            {
                "name": "vllm",
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }
        ]
    elif what == "container-exited":  # the serving container stopped, the pod still reported Running
        spec.setdefault("nodeName", "n1")
        status["phase"] = "Running"
        status["containerStatuses"] = [
            {
                "name": "vllm",
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }
        ]
    elif what == "init-failed":
        status["initContainerStatuses"] = [
            {
                "name": "preflight",
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "reason": "Error"}},
            }
        ]
    elif what == "restart":
        status["containerStatuses"] = [{"name": "vllm", "restartCount": 1, "state": {"running": {}}}]
    elif what == "terminating":
        meta["deletionTimestamp"] = "2026-11-27T12:00:30Z"
    elif what == "unschedulable":
        make_unschedulable(pod)
    elif what == "template-label":
        meta["labels"] = {**meta["labels"], c.LABEL_TEMPLATE_HASH: "edited"}
    elif what == "generation-annotation":
        meta["annotations"] = {**meta["annotations"], c.ANNOTATION_GROUP_GENERATION: "7"}
    elif what == "owner":
        meta["ownerReferences"] = [{**meta["ownerReferences"][0], "uid": "someone-else"}]
    elif what == "uid":
        meta["uid"] = meta["uid"] + "-new"
    else:  # pragma: no cover - the strategy draws from MUTATIONS only
        raise AssertionError(what)


def outcome(d: Decision) -> tuple[Any, ...]:
    return (
        sorted((o["kind"], o["metadata"]["name"]) for o in d.apply),
        sorted(d.delete),
        [(e.reason, e.message, e.warning) for e in d.events],
        d.requeue_after,
        d.restarted,
        d.became_ready,
        d.fills_generation,
    )


def world_of(dp: int, ready_first: bool) -> World:
    w = World(make_pdep(dp))
    w.step()  # creates the pods and Services
    if ready_first:
        w.run_all()
        w.step()  # the group is Ready: later readiness losses are the cache's to report
    return w


@settings(max_examples=300, deadline=None)
@given(
    dp=st.integers(2, 5),
    ready_first=st.booleans(),
    base=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(MUTATIONS)), max_size=6),
    change=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(MUTATIONS)), min_size=1, max_size=4),
)
def test_equal_facts_mean_equal_decisions(
    dp: int, ready_first: bool, base: list[tuple[int, str]], change: list[tuple[int, str]]
) -> None:
    w = world_of(dp, ready_first)
    names = sorted(w.pods)
    before = {n: copy.deepcopy(p) for n, p in w.pods.items()}
    for i, what in base:
        mutate(before[names[i % dp]], what)
    after = copy.deepcopy(before)
    for i, what in change:
        mutate(after[names[i % dp]], what)
    pods_a = [trim(p) for p in before.values()]
    pods_b = [trim(p) for p in after.values()]
    if [decision_facts(p) for p in pods_a] != [decision_facts(p) for p in pods_b]:
        return  # a change decide() acts on: the cache notes it (test_state)
    if all(map(pod_counts_ready, pods_a)) != all(map(pod_counts_ready, pods_b)):
        return  # a group completed or broken: the cache notes that too
    verdict = validate_object(w.pdep)
    services = [trim(s) for s in w.services.values()]
    a = decide(w.pdep, verdict, pods_a, services, w.now)
    b = decide(w.pdep, verdict, pods_b, services, w.now)
    assert outcome(a) == outcome(b)
    assert progress_only(a.status, b.status)


def test_the_mutations_cover_both_kinds() -> None:
    """The property above is only as strong as its mutations: each one either keeps a pod's facts (progress)
    or changes them, and both kinds occur."""
    w = world_of(2, ready_first=False)
    pod = w.pods[sorted(w.pods)[0]]
    kept = []
    for what in MUTATIONS:
        p = copy.deepcopy(pod)
        mutate(p, what)
        kept.append(decision_facts(trim(p)) == decision_facts(trim(pod)))
    assert kept == [True] * 5 + [False] * (len(MUTATIONS) - 5)
