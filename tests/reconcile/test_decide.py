"""Table tests of the pure gang decision: whole processes simulated without an API server."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from tests.support.world import T0, World, make_pdep, make_unschedulable, ready_world
from wideep.api import constants as c
from wideep.api.validate import validate_object
from wideep.reconcile.decide import backoff_seconds, decide, iso
from wideep.reconcile.pods import is_rank_pod_name


def test_first_pass_creates_every_pod_and_service() -> None:
    w = World(make_pdep(4))
    d = w.step()
    kinds = [o["kind"] for o in d.apply]
    assert kinds.count("Pod") == 4 and kinds.count("Service") == 3
    assert [e.reason for e in d.events] == [c.EVENT_GROUP_CREATED]
    assert w.pdep["status"]["groupGeneration"] == 1
    assert d.fills_generation == 1 and w.pdep["status"]["createdGeneration"] == 0
    assert (
        w.cond(c.COND_PROGRESSING)["reason"] == c.REASON_CREATING or w.cond(c.COND_READY)["status"] == "False"
    )


def test_ready_group_makes_no_writes_and_keeps_status() -> None:
    w = ready_world()
    before = copy.deepcopy(w.pdep["status"])
    d = w.step(30)
    assert d.apply == [] and d.delete == [] and d.events == []
    assert d.status == before  # identical status: the reconciler writes nothing


def test_failed_rank_restarts_whole_group_once_with_forensics() -> None:
    w = ready_world()
    w.fail("g-2")
    d = w.step()
    assert d.restarted
    assert sorted(n for k, n, _ in d.delete if k == "Pod") == ["g-0", "g-1", "g-2", "g-3"]
    assert not [o for o in d.apply if o["kind"] == "Pod"], "no new pod while old ones exist"
    reasons = [e.reason for e in d.events]
    assert reasons.count(c.EVENT_RANK_FAILED) == 1 and reasons.count(c.EVENT_GROUP_RESTARTED) == 1
    failure = w.pdep["status"]["ranks"][2]["lastFailure"]
    assert failure == {
        **failure,
        "reason": "OOMKilled",
        "exitCode": 137,
        "message": "boom",
        "pod": "g-2",
        "groupGeneration": 1,
    }
    assert w.pdep["status"]["groupRestarts"] == 1
    # old pods gone: the next pass creates generation 2, all at once
    d = w.step()
    assert len([o for o in d.apply if o["kind"] == "Pod"]) == 4
    assert w.gens() == {"2"}
    w.run_all()
    w.step()
    assert w.cond(c.COND_READY)["status"] == "True"
    assert w.pdep["status"]["ranks"][2]["lastFailure"]["pod"] == "g-2"  # forensics survive the restart


def test_backoff_delays_the_second_restart() -> None:
    w = ready_world()
    w.fail("g-0")
    w.step()
    w.step()
    w.run_all()
    w.step()
    w.fail("g-1")
    d = w.step(1)  # 3 s after the first restart; backoff for restart 2 is 10 s
    assert not d.restarted and d.delete == []
    assert d.requeue_after is not None and 0 < d.requeue_after <= 10
    assert w.cond(c.COND_PROGRESSING)["reason"] == c.REASON_RESTART_BACKOFF
    d = w.step(d.requeue_after)
    assert d.restarted


def test_budget_exhausted_stops_and_reports_once() -> None:
    w = ready_world(backoffSeconds=0)
    for i in range(2):
        w.fail(f"g-{i}")
        assert w.step().restarted
        w.step()
        w.run_all()
        w.step()
    w.fail("g-3")
    d = w.step()
    assert not d.restarted and d.delete == [] and not [o for o in d.apply if o["kind"] == "Pod"]
    assert w.cond(c.COND_READY)["reason"] == c.REASON_RESTART_BUDGET_EXHAUSTED
    assert w.cond(c.COND_DEGRADED)["status"] == "True"
    assert [e.reason for e in d.events].count(c.EVENT_BUDGET_EXHAUSTED) == 1
    d = w.step(60)
    assert d.events == [] and d.delete == [] and d.apply == []
    # a retry resets the budget and restarts
    w.pdep["metadata"]["annotations"] = {c.ANNOTATION_RETRY: "now"}
    d = w.step()
    assert d.restarted and w.pdep["status"]["groupRestarts"] == 1


def test_restart_policy_never_leaves_the_group() -> None:
    w = ready_world(policy="Never")
    w.fail("g-1")
    d = w.step()
    assert not d.restarted and d.delete == []
    assert w.cond(c.COND_READY)["reason"] == c.REASON_RANK_FAILED
    assert w.cond(c.COND_PROGRESSING)["reason"] == c.REASON_RESTARTS_DISABLED


def test_deleted_pod_after_creation_is_an_incident_but_not_before() -> None:
    w = World(make_pdep(4))
    w.step()
    del w.pods["g-1"]  # before every pod existed: simply created again
    d = w.step()
    assert not d.restarted and [o["metadata"]["name"] for o in d.apply if o["kind"] == "Pod"] == ["g-1"]
    assert d.fills_generation == 1
    w.run_all()
    w.step()
    del w.pods["g-3"]
    d = w.step()
    assert d.restarted
    assert w.pdep["status"]["ranks"][3]["lastFailure"]["reason"] == "Deleted"


@pytest.mark.parametrize(
    ("lose", "says"),
    [
        (lambda w: w.pods.pop("g-3"), "rank pod g-3 is gone"),  # deleted, or its ownerReference moved
        (lambda w: w.pods["g-3"]["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z"), "was deleted"),
        (lambda w: w.fail("g-3"), "failed (OOMKilled)"),
    ],
    ids=["missing", "terminating", "failed"],
)
def test_the_restart_names_how_the_rank_was_lost(lose: Any, says: str) -> None:
    w = ready_world(policy="Never")
    lose(w)
    w.step()
    assert says in w.cond(c.COND_READY)["message"]


def test_a_pod_someone_else_made_ours_is_deleted_without_touching_the_group() -> None:
    """Another group's rank pod whose ownerReference someone pointed at this group: not a planned name, so
    it is deleted, and the running group is neither replaced nor restarted."""
    w = ready_world()
    status = copy.deepcopy(w.pdep["status"])
    stray = copy.deepcopy(w.pods["g-1"])
    stray["metadata"].update(name="other-1", uid="stray")
    stray["metadata"]["labels"][c.LABEL_TEMPLATE_HASH] = "elsewhere"
    w.pods["other-1"] = stray
    d = w.step(30)
    assert d.delete == [("Pod", "other-1", "stray")]
    assert d.apply == [] and d.events == [] and not d.restarted
    assert d.status == status


@pytest.mark.parametrize(
    ("pod", "ours"),
    [
        ("g-0", True),
        ("g-17", True),
        ("g-01", False),
        ("g-", False),
        ("g-1-0", False),
        ("gg-1", False),
        ("g-\u0663", False),
        ("h-1", False),
    ],
)
def test_rank_pod_names(pod: str, ours: bool) -> None:
    assert is_rank_pod_name("g", pod) is ours


def test_template_change_replaces_group_and_resets_budget() -> None:
    w = ready_world()
    w.pdep["status"]["groupRestarts"] = 1
    w.pdep["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
    w.pdep["metadata"]["generation"] = 2
    d = w.step()
    assert len([x for x in d.delete if x[0] == "Pod"]) == 4 and not d.restarted
    assert [e.reason for e in d.events] == [c.EVENT_GROUP_REPLACED]
    assert w.pdep["status"]["groupRestarts"] == 0 and w.pdep["status"]["lastGroupChange"] == "Replaced"
    assert w.cond(c.COND_PROGRESSING)["reason"] == c.REASON_ROLLING_OUT
    w.step()
    assert {p["spec"]["containers"][0]["image"] for p in w.pods.values()} == {"img:2"}


def test_template_change_whose_deletes_outlived_the_operator_is_still_a_replacement() -> None:
    # An operator sent the deletes of a replacement and died before recording it: the next one sees the old
    # generation's pods terminating (or some already gone) and the old status.
    w = ready_world()
    w.pdep["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
    w.pdep["metadata"]["generation"] = 2
    del w.pods["g-0"]
    for pod in w.pods.values():
        pod["metadata"]["deletionTimestamp"] = iso(w.now)
    d = w.step()
    assert not d.restarted and [e.reason for e in d.events] == [c.EVENT_GROUP_REPLACED]
    st = w.pdep["status"]
    assert (st["groupGeneration"], st["groupRestarts"], st["lastGroupChange"]) == (2, 0, "Replaced")
    assert not any(r.get("lastFailure") for r in st["ranks"]), "a replaced pod is not a failed rank"


def test_spec_whose_pods_the_api_server_refuses_leaves_the_running_group_untouched() -> None:
    w = ready_world()
    before = copy.deepcopy(w.pdep["status"])
    w.pdep["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
    w.pdep["metadata"]["generation"] = 2
    refusal = '422 Invalid: Pod "g-0" is invalid: spec.containers[0].volumeMounts[0].name: Not found: "dshm"'
    d = decide(w.pdep, validate_object(w.pdep), list(w.pods.values()), [], w.now, rejected=refusal)
    assert d.apply == [] and d.delete == [] and d.requeue_after == 30
    assert [(e.reason, e.warning) for e in d.events] == [(c.EVENT_INVALID_SPEC, True)]
    assert "volumeMounts[0].name" in d.events[0].message and "left untouched" in d.events[0].message
    valid = next(x for x in d.status["conditions"] if x["type"] == c.COND_VALID)
    assert (valid["status"], valid["reason"], valid["observedGeneration"]) == (
        "False",
        c.REASON_POD_REJECTED,
        2,
    )
    assert "dry-run create of g-0" in valid["message"] and "volumeMounts" in valid["message"]
    for k in ("groupGeneration", "groupRestarts", "lastGroupChange", "ranks", "readyRanks"):
        assert d.status[k] == before[k], k
    ready = next(x for x in d.status["conditions"] if x["type"] == c.COND_READY)
    assert ready["status"] == "True", "the running group is still serving"
    # The next pass with the same refusal says nothing new.
    w.pdep["status"] = d.status
    again = decide(w.pdep, validate_object(w.pdep), list(w.pods.values()), [], w.now, rejected=refusal)
    assert again.events == [] and again.status == d.status
    # Accepted after all (the refusal is gone): the replacement goes ahead.
    d = w.step()
    assert [e.reason for e in d.events] == [c.EVENT_GROUP_REPLACED] and w.pdep["status"][
        "groupGeneration"
    ] == 2


def test_dp_change_replaces_group() -> None:
    w = ready_world(dp=4)
    services = sorted(w.services)
    w.pdep["spec"]["parallelConfig"]["dataParallelSize"] = 2
    w.pdep["metadata"]["generation"] = 2
    d = w.step()
    assert not [n for k, n, _ in d.delete if k == "Service"]  # the group's Services do not depend on DP
    assert "vLLM config hash changed" in d.events[0].message
    w.step()
    assert sorted(w.pods) == ["g-0", "g-1"]
    assert sorted(w.services) == services


def test_services_the_plan_no_longer_has_are_pruned() -> None:
    """Per-rank Services made by earlier builds (owned, labelled: the cache hands decide the group's own
    children only) go; the planned ones stay and the running group is left alone."""
    w = ready_world(dp=2)
    planned = sorted(w.services)
    template = copy.deepcopy(w.services[planned[0]])
    for r in range(2):
        stale = copy.deepcopy(template)
        stale["metadata"]["name"] = f"g-rank-{r}"
        stale["metadata"]["uid"] = f"stale-{r}"
        w.services[f"g-rank-{r}"] = stale
    d = w.step()
    assert sorted((k, n, u) for k, n, u in d.delete) == [
        ("Service", "g-rank-0", "stale-0"),
        ("Service", "g-rank-1", "stale-1"),
    ]
    assert not d.apply and not d.restarted
    assert sorted(w.services) == planned
    assert w.cond(c.COND_READY)["status"] == "True"


def test_label_change_applies_in_place() -> None:
    w = ready_world()
    w.pdep["spec"]["template"]["metadata"] = {"labels": {"team": "a"}}
    w.pdep["metadata"]["generation"] = 2
    d = w.step()
    assert d.delete == [] and len(d.apply) == 4 and all(o["kind"] == "Pod" for o in d.apply)
    assert all(p["metadata"]["labels"]["team"] == "a" for p in w.pods.values())
    assert w.step().apply == []


def test_invalid_spec_touches_nothing() -> None:
    w = ready_world()
    w.pdep["spec"]["parallelConfig"]["enableEplb"] = True
    w.pdep["spec"]["parallelConfig"]["enableExpertParallel"] = False
    w.pdep["metadata"]["generation"] = 2
    d = w.step()
    assert d.apply == [] and d.delete == []
    valid = w.cond(c.COND_VALID)
    assert valid["status"] == "False" and "eplb-needs-ep" in valid["message"]
    assert w.cond(c.COND_READY)["status"] == "True"  # the running group is still Ready
    assert [e.reason for e in d.events] == [c.EVENT_INVALID_SPEC]
    assert w.step().events == []  # reported once per generation


def test_unschedulable_ranks_report_capacity_without_restart() -> None:
    w = World(make_pdep(4))
    w.step()
    w.run_all()
    make_unschedulable(w.pods["g-3"])
    d = w.step()
    assert not d.restarted and d.delete == []
    prog = w.cond(c.COND_PROGRESSING)
    assert (
        prog["reason"] == c.REASON_INSUFFICIENT_CAPACITY and "1 more nvidia.com/gpu needed" in prog["message"]
    )


def test_conditions_keep_transition_time_when_unchanged() -> None:
    w = ready_world()
    t = w.cond(c.COND_READY)["lastTransitionTime"]
    w.step(100)
    assert w.cond(c.COND_READY)["lastTransitionTime"] == t
    assert t == iso(T0 + dt.timedelta(seconds=2))


@pytest.mark.parametrize(
    ("done", "base", "cap", "want"),
    [
        (0, 10, 300, 0),
        (1, 10, 300, 10),
        (2, 10, 300, 20),
        (3, 10, 300, 40),
        (9, 10, 300, 300),
        (5, 0, 300, 0),
    ],
)
def test_backoff_table(done: int, base: int, cap: int, want: float) -> None:
    assert backoff_seconds(done, base, cap) == want


# ------------------------------------------------------------------ stopped ranks: every form is an incident


def _terminated(name: str, code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}},
    }


def _running(name: str) -> dict[str, Any]:
    return {"name": name, "restartCount": 0, "ready": True, "state": {"running": {}}}


READY = [{"type": "Ready", "status": "True"}]
SHUTDOWN = "EngineCore encountered an issue. See stack trace (above) for the root cause.\nShutting down"
STOPPED_FORMS: dict[str, dict[str, Any]] = {
    # a vLLM rank that lost a DP peer shuts down in order and exits 0: the pod ends Succeeded
    "succeeded-exit-0": {
        "phase": "Succeeded",
        "containerStatuses": [_terminated("vllm", 0, "Completed", SHUTDOWN)],
    },
    "failed-exit-1": {"phase": "Failed", "containerStatuses": [_terminated("vllm", 1, "Error", "boom")]},
    "failed-signal": {"phase": "Failed", "containerStatuses": [_terminated("vllm", 137, "OOMKilled")]},
    # the kubelet has not moved the phase yet (or another container still runs): still Running, even Ready
    "running-serving-exited-0": {
        "phase": "Running",
        "conditions": READY,
        "containerStatuses": [_terminated("vllm", 0, "Completed"), _running("sidecar")],
    },
    "running-serving-exited-2": {
        "phase": "Running",
        "conditions": READY,
        "containerStatuses": [_terminated("vllm", 2, "Error", "fatal")],
    },
    "running-init-failed": {
        "phase": "Running",
        "initContainerStatuses": [_terminated("preflight", 3, "Error", "rank 1 missing")],
        "containerStatuses": [_running("vllm")],
    },
    "succeeded-no-statuses": {"phase": "Succeeded"},
}
# (reason in status, exit code, container, words of lastRestartReason, verb of the RankFailed event)
STOPPED_WANT: dict[str, tuple[str, int | None, str | None, str, str]] = {
    "succeeded-exit-0": ("Completed", 0, "vllm", "exited (exit code 0, container vllm)", "exited"),
    "failed-exit-1": ("Error", 1, "vllm", "failed (Error)", "failed"),
    "failed-signal": ("OOMKilled", 137, "vllm", "failed (OOMKilled)", "failed"),
    "running-serving-exited-0": ("Completed", 0, "vllm", "exited (exit code 0, container vllm)", "exited"),
    "running-serving-exited-2": ("Error", 2, "vllm", "failed (Error)", "failed"),
    "running-init-failed": ("Error", 3, "preflight", "failed (Error)", "failed"),
    "succeeded-no-statuses": ("Succeeded", None, None, "exited (Succeeded)", "exited"),
}


@pytest.mark.parametrize("coming_up", [False, True], ids=["ready-group", "coming-up"])
@pytest.mark.parametrize("form", list(STOPPED_FORMS))
def test_every_stopped_rank_restarts_the_group_once(form: str, coming_up: bool) -> None:
    if coming_up:  # every pod created, none Ready yet
        w = World(make_pdep(4))
        w.step()
        for p in w.pods.values():
            p["spec"]["nodeName"] = "n1"
            p["status"] = {"phase": "Running", "containerStatuses": [_running("vllm")]}
        w.step()
        assert w.cond(c.COND_READY)["status"] == "False"
    else:
        w = ready_world()
    w.pods["g-1"]["status"] = copy.deepcopy(STOPPED_FORMS[form])
    d = w.step()
    assert d.restarted, f"{form}: not an incident"
    assert sorted(n for k, n, _ in d.delete if k == "Pod") == ["g-0", "g-1", "g-2", "g-3"]
    reason, code, container, says, verb = STOPPED_WANT[form]
    failure = w.pdep["status"]["ranks"][1]["lastFailure"]
    assert (failure["reason"], failure.get("exitCode"), failure.get("container")) == (reason, code, container)
    assert failure["pod"] == "g-1" and failure["groupGeneration"] == 1
    assert w.pdep["status"]["lastRestartReason"] == f"rank pod g-1 {says}"
    events = [e for e in d.events if e.reason == c.EVENT_RANK_FAILED]
    assert len(events) == 1 and events[0].message.startswith(f"rank pod g-1 {verb}: ") and events[0].warning
    assert w.pdep["status"]["groupRestarts"] == 1
    d = w.step()  # the old pods are gone: the whole new generation at once, and no second restart
    assert not d.restarted and len([o for o in d.apply if o["kind"] == "Pod"]) == 4
    w.run_all()
    w.step()
    assert w.cond(c.COND_READY)["status"] == "True" and w.pdep["status"]["groupRestarts"] == 1


def test_an_exit_0_message_reaches_the_event() -> None:
    w = ready_world()
    w.pods["g-1"]["status"] = copy.deepcopy(STOPPED_FORMS["succeeded-exit-0"])
    d = w.step()
    event = next(e for e in d.events if e.reason == c.EVENT_RANK_FAILED)
    assert event.message == "rank pod g-1 exited: Completed, exit code 0, container vllm: Shutting down"


@pytest.mark.parametrize(
    "status",
    [
        {  # the preflight init container did its job
            "phase": "Running",
            "conditions": READY,
            "initContainerStatuses": [_terminated("preflight", 0, "Completed")],
            "containerStatuses": [_running("vllm")],
        },
        {"phase": "Running", "conditions": READY, "containerStatuses": [_running("vllm")]},
    ],
    ids=["init-completed", "running"],
)
def test_a_finished_init_container_is_no_incident(status: dict[str, Any]) -> None:
    w = ready_world()
    w.pods["g-1"]["status"] = status
    d = w.step()
    assert not d.restarted and d.delete == [] and w.cond(c.COND_READY)["status"] == "True"


def test_a_rank_whose_serving_container_stopped_does_not_count_as_ready() -> None:
    """The kubelet may report the pod Ready for a moment after its container exited: it is not a ready rank
    (restartPolicy Never: the budget-exhausted group shows it)."""
    w = ready_world(policy="Never")
    w.pods["g-1"]["status"] = copy.deepcopy(STOPPED_FORMS["running-serving-exited-0"])
    w.step()
    assert w.pdep["status"]["readyRanks"] == 3 and not w.pdep["status"]["ranks"][1]["ready"]
    assert w.cond(c.COND_READY)["reason"] == c.REASON_RANK_FAILED
