"""Table tests of the watch cache: ordering by resourceVersion, tombstones, ownership, relists."""

from __future__ import annotations

from typing import Any

import pytest

from wideep.api import constants as c
from wideep.kube.cache import Cache
from wideep.reconcile.pods import CLASSIFIER

KEY = ("ns", "g")


def pod(
    name: str = "g-0",
    uid: str = "u1",
    rv: int = 10,
    owner: str | None = "g",
    label: str | None = "g",
    phase: str = "Running",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": uid,
        "resourceVersion": str(rv),
        "labels": {},
    }
    if label is not None:
        meta["labels"] = {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE, c.LABEL_DEPLOYMENT: label}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "name": owner,
                "uid": f"uid-{owner}",
                "controller": True,
            }
        ]
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "n1", "containers": []},
        "status": {"phase": phase},
    }


def names(cache: Cache, key: tuple[str, str] = KEY) -> dict[str, str]:
    return {n: o["metadata"]["uid"] for n, o in cache.children["Pod"].get(key, {}).items()}


def test_older_resource_version_never_wins() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(pod(rv=20, phase="Failed"))
    cache.put_child(pod(rv=15, phase="Running"))
    assert cache.children["Pod"][KEY]["g-0"]["status"]["phase"] == "Failed"


def test_late_event_of_a_deleted_pod_does_not_bring_it_back() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(pod(uid="old", rv=10))
    cache.delete_child(pod(uid="old", rv=11))
    cache.put_child(pod(uid="old", rv=10))  # a stale MODIFIED that arrives after the DELETED
    assert names(cache) == {}
    assert KEY in cache.last_pod_gone
    cache.put_child(pod(uid="new", rv=30))  # the replacement under the same name is taken
    assert names(cache) == {"g-0": "new"}


def test_owner_reference_wins_over_an_edited_label() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(pod(label="someone-else"))
    assert names(cache) == {"g-0": "u1"}
    assert names(cache, ("ns", "someone-else")) == {}


def test_a_pod_moved_to_another_owner_concerns_both_groups() -> None:
    """Someone points a rank pod's ownerReference at another group: the group it left lost a rank and must
    hear of it now (the informer notifies every group put_child names), not at its next resync."""
    cache = Cache(CLASSIFIER)
    other = ("ns", "h")
    cache.expected_pods[KEY] = 1
    assert cache.put_child(ready_pod("g-0", "a", 1)) == [KEY]
    assert cache.pop_completed(KEY)
    cache.pop_changed(KEY)
    moved = ready_pod("g-0", "a", 2)
    moved["metadata"]["ownerReferences"][0].update(name="h", uid="uid-h")
    assert cache.put_child(moved) == [KEY, other]
    assert names(cache) == {}
    assert names(cache, other) == {"g-0": "a"}
    assert cache.pop_changed(KEY) and cache.pop_changed(other)
    assert cache._ready.get(KEY) is None  # it no longer counts towards g's ready ranks
    assert cache.put_child(moved) == [other]  # a later event of the moved pod concerns its new owner only


def test_a_relist_that_finds_a_pod_under_another_owner_touches_both_groups() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(pod(name="g-0", uid="u1", rv=10))
    moved = pod(name="g-0", uid="u1", rv=12, owner="h")
    assert cache.replace_children("Pod", "ns", [moved]) == {KEY, ("ns", "h")}


def test_object_without_owner_or_label_leaves_the_cache() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(pod(rv=10))
    cache.put_child(pod(rv=11, owner=None, label=None))
    assert names(cache) == {}


@pytest.mark.parametrize("listed", [[], ["u2"]])
def test_relist_drops_what_it_does_not_see_without_burying_it(listed: list[str]) -> None:
    """A relist is filtered by the managed-by label: a pod whose label someone removed at that moment is
    missing from it but still exists. It is dropped from the cache, and must come back when the reconciler
    lists pods by owner (or the label returns); a tombstone would hide it for good."""
    cache = Cache(CLASSIFIER)
    cache.put_child(pod(name="g-0", uid="u1", rv=10))
    cache.put_child(pod(name="g-1", uid="u2", rv=11))
    touched = cache.replace_children("Pod", "ns", [pod(name="g-1", uid=u, rv=12) for u in listed])
    assert touched == {KEY}
    assert "g-0" not in names(cache)
    cache.put_child(pod(name="g-0", uid="u1", rv=13))
    assert names(cache)["g-0"] == "u1"


def test_relist_of_one_namespace_leaves_others_alone() -> None:
    cache = Cache(CLASSIFIER)
    other = pod(uid="o1")
    other["metadata"]["namespace"] = "other"
    cache.put_child(other)
    cache.put_child(pod(uid="u1"))
    cache.replace_children("Pod", "ns", [])
    assert names(cache, ("other", "g")) == {"g-0": "o1"}
    assert names(cache) == {}


def test_trim_keeps_what_the_reconciler_reads_only() -> None:
    cache = Cache(CLASSIFIER)
    big = pod()
    big["metadata"]["managedFields"] = [{"manager": "x"}] * 50
    big["spec"]["containers"] = [{"name": "vllm", "args": ["x"] * 100}]
    cache.put_child(big)
    kept = cache.children["Pod"][KEY]["g-0"]
    assert "managedFields" not in kept["metadata"]
    assert kept["spec"] == {"nodeName": "n1"}
    assert kept["status"] == {"phase": "Running"}


def test_at_start_groups_that_had_pods_settle_before_reusing_their_names() -> None:
    cache = Cache(CLASSIFIER)
    for name, status in (("running", {"groupGeneration": 2}), ("new", {}), ("seen", {"groupGeneration": 1})):
        cache.put_pdep(
            {
                "metadata": {"namespace": "ns", "name": name, "uid": name, "resourceVersion": "1"},
                "status": status,
            }
        )
    cache.last_pod_gone[("ns", "seen")] = 1.0  # a group whose pods this process saw go keeps that time
    cache.started()
    assert set(cache.last_pod_gone) == {("ns", "running"), ("ns", "seen")}
    assert cache.last_pod_gone[("ns", "seen")] == 1.0


def ready_pod(name: str, uid: str, rv: int, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    p = pod(name=name, uid=uid, rv=rv)
    p["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    return p


def test_group_completes_when_the_last_planned_pod_becomes_ready() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(ready_pod("g-0", "a", 1))
    assert not cache.pop_completed(KEY)  # no plan known yet: nothing to complete
    cache.expected_pods[KEY] = 2
    cache.put_child(ready_pod("g-1", "b", 2, ready=False))
    assert not cache.pop_completed(KEY)
    cache.put_child(ready_pod("g-1", "b", 3))
    assert cache.pop_completed(KEY)
    assert not cache.pop_completed(KEY)  # asked once
    cache.put_child(ready_pod("g-1", "b", 4))  # a later event of a complete group is not a completion
    assert not cache.pop_completed(KEY)


@pytest.mark.parametrize(
    "lose",
    [
        lambda cache: cache.put_child(ready_pod("g-1", "b", 5, ready=False)),
        lambda cache: cache.put_child(ready_pod("g-1", "b", 5, deleting=True)),
        lambda cache: cache.delete_child(ready_pod("g-1", "b", 5)),
        lambda cache: cache.mark_deleting("Pod", KEY, "g-1", "b", "2026-11-28T00:00:00Z"),
        lambda cache: cache.replace_children("Pod", "ns", [ready_pod("g-0", "a", 5)]),
    ],
    ids=["not-ready", "terminating", "deleted", "deleting", "relisted-away"],
)
def test_a_group_that_lost_a_ready_pod_completes_again(lose: Any) -> None:
    cache = Cache(CLASSIFIER)
    cache.expected_pods[KEY] = 2
    cache.put_child(ready_pod("g-0", "a", 1))
    cache.put_child(ready_pod("g-1", "b", 2))
    assert cache.pop_completed(KEY)
    lose(cache)
    assert not cache.pop_completed(KEY)
    cache.put_child(ready_pod("g-1", "c", 10))  # its replacement, Ready
    assert cache.pop_completed(KEY)


def test_forgotten_group_keeps_no_completion() -> None:
    cache = Cache(CLASSIFIER)
    cache.expected_pods[KEY] = 1
    cache.put_child(ready_pod("g-0", "a", 1))
    cache.forget(KEY)
    assert not cache.pop_completed(KEY)
    assert KEY not in cache.expected_pods


def test_no_readiness_entry_outlives_a_groups_pods() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(ready_pod("g-0", "a", 1))
    cache.delete_child(ready_pod("g-0", "a", 2))
    assert cache._ready == {}


def _bound(p: dict[str, Any]) -> dict[str, Any]:
    p["status"] = {"phase": "Pending"}
    return p


def _exited(p: dict[str, Any]) -> dict[str, Any]:
    p["status"]["containerStatuses"] = [
        {"name": "vllm", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    ]
    return p


@pytest.mark.parametrize(
    ("event", "changed"),
    [
        (lambda cache: cache.put_child(ready_pod("g-0", "a", 2)), False),  # the watch's echo of our create
        (lambda cache: cache.put_child(_bound(pod("g-0", "a", 2))), False),  # bound to a node
        (lambda cache: cache.put_child(pod("g-0", "a", 2)), False),  # Running
        (lambda cache: cache.put_child(pod("g-0", "a", 2, phase="Failed")), True),
        (lambda cache: cache.put_child(pod("g-0", "a", 2, phase="Succeeded")), True),  # a rank that exited 0
        (
            lambda cache: cache.put_child(_exited(pod("g-0", "a", 2))),
            True,
        ),  # still Running, container stopped
        (lambda cache: cache.put_child(ready_pod("g-0", "a", 2, deleting=True)), True),
        (lambda cache: cache.put_child(pod("g-0", "a2", 2)), True),  # another pod under the name
        (lambda cache: cache.put_child(pod("g-0", "a", 2, owner=None)), True),
        (lambda cache: cache.put_child(pod("g-1", "b", 2)), True),  # a pod the reconciler did not make
        (lambda cache: cache.delete_child(pod("g-0", "a", 2)), True),
        (lambda cache: cache.replace_children("Pod", "ns", []), True),
    ],
    ids=[
        "echo",
        "bound",
        "running",
        "failed",
        "succeeded",
        "container-exited",
        "terminating",
        "new-uid",
        "owner-removed",
        "unknown-pod",
        "deleted",
        "relisted-away",
    ],
)
def test_only_events_that_decide_acts_on_are_noted(event: Any, changed: bool) -> None:
    cache = Cache(CLASSIFIER)
    cache.expected_pods[KEY] = 2
    cache.put_child(ready_pod("g-0", "a", 1, ready=False), note=False)  # the answer to our own create
    assert not cache.pop_changed(KEY)
    event(cache)
    assert cache.pop_changed(KEY) is changed
    assert not cache.pop_changed(KEY)  # asked once


def test_readiness_is_progress_until_it_completes_or_breaks_a_group() -> None:
    cache = Cache(CLASSIFIER)
    cache.expected_pods[KEY] = 2
    cache.put_child(ready_pod("g-0", "a", 1, ready=False), note=False)
    cache.put_child(ready_pod("g-1", "b", 2, ready=False), note=False)
    cache.put_child(ready_pod("g-0", "a", 3))
    assert not cache.pop_changed(KEY) and not cache.pop_completed(KEY)  # one of two Ready: progress
    cache.put_child(ready_pod("g-1", "b", 4))
    assert cache.pop_completed(KEY)  # the last one: a completion, urgent
    cache.put_child(ready_pod("g-1", "b", 5, ready=False))
    assert cache.pop_changed(KEY)  # a Ready group lost a pod: Ready=False is written at once


def test_a_service_event_is_always_noted() -> None:
    cache = Cache(CLASSIFIER)
    svc = {
        "kind": "Service",
        "metadata": {**pod()["metadata"], "name": "g-http", "uid": "s1"},
        "spec": {"selector": {}, "ports": []},
    }
    cache.put_child(svc, note=False)
    cache.put_child({**svc, "metadata": {**svc["metadata"], "resourceVersion": "11"}})
    assert cache.pop_changed(KEY)


def _service(rv: int = 10) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {**pod(rv=rv)["metadata"], "name": "g-http", "uid": "s1"},
        "spec": {"selector": {}, "ports": []},
    }


@pytest.mark.parametrize("obj", [pod(), _service()], ids=["pod", "service"])
def test_the_version_already_held_is_not_noted(obj: dict[str, Any]) -> None:
    """The watch's echo of a write whose answer the cache took in, or a relist: the same resourceVersion is
    the same object, nothing for decide() to act on (a Service's echo used to cost its group a pass)."""
    cache = Cache(CLASSIFIER)
    cache.put_child(obj, note=False)  # the answer to our own write
    assert cache.put_child(dict(obj)) == [KEY]
    assert not cache.pop_changed(KEY)
    assert cache.replace_children(obj["kind"], "ns", [dict(obj)]) == {KEY}
    assert not cache.pop_changed(KEY)


def test_a_pod_marked_deleting_stays_so_when_its_version_comes_again() -> None:
    cache = Cache(CLASSIFIER)
    cache.put_child(pod(rv=10), note=False)
    cache.mark_deleting("Pod", KEY, "g-0", "u1", "2026-01-01T00:00:00Z")
    cache.put_child(pod(rv=10))  # a relist or late echo of the version before the delete
    assert cache.children["Pod"][KEY]["g-0"]["metadata"]["deletionTimestamp"]
    cache.put_child(pod(rv=11))  # a newer version is taken in
    assert "deletionTimestamp" not in cache.children["Pod"][KEY]["g-0"]["metadata"]


def test_the_echo_of_a_create_in_flight_is_not_noted() -> None:
    """The watch brings a created object before the create's answer: the pass that creates it has decided
    on it; only an incident it already carries is news."""
    cache = Cache(CLASSIFIER)
    held = {**_service(), "metadata": {**_service()["metadata"], "name": "g-ranks", "uid": "s2"}}
    cache.put_child(held, note=False)
    created = [pod("g-0", "a", 1), pod("g-1", "b", 1), _service()]
    cache.creating(KEY, [*created, held], True)  # a pass's writes: creates, and an apply of what is held
    cache.put_child({**held, "metadata": {**held["metadata"], "resourceVersion": "12"}})
    assert cache.pop_changed(KEY), "a new version of an object the cache holds is news, in flight or not"
    cache.put_child(_bound(pod("g-0", "a", 2)))
    cache.put_child(_service(3))
    assert not cache.pop_changed(KEY)
    cache.put_child(pod("g-1", "b", 4, phase="Failed"))  # failed before its create was answered
    assert cache.pop_changed(KEY)
    cache.put_child(pod("g-1", "b", 5, phase="Succeeded"))  # and then reported as exited 0: news too
    assert cache.pop_changed(KEY)
    cache.creating(KEY, created, False)
    cache.delete_child(pod("g-0", "a", 5))
    assert cache.pop_changed(KEY)
    cache.put_child(pod("g-0", "a2", 6))  # not ours in flight: someone else's pod under a planned name
    assert cache.pop_changed(KEY)


def _pdep(rv: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "g", "uid": "uid-g", "resourceVersion": str(rv)}}


@pytest.mark.parametrize(
    ("events", "answer", "pass_due"),
    [
        ([7], 7, False),  # the echo of our write, before its answer
        ([6], 7, True),  # someone else's change, just before our write
        ([7, 8], 7, True),  # ours, then someone else's
        ([], 7, False),
        ([7], None, True),  # the write failed: whatever came is news
    ],
    ids=["echo", "other-before", "echo-then-other", "none", "failed"],
)
def test_events_during_a_status_write_wait_for_its_answer(
    events: list[int], answer: int | None, pass_due: bool
) -> None:
    cache = Cache(CLASSIFIER)
    assert not cache.held_pdep_event(KEY, _pdep(5))  # no write in flight: the event is acted on at once
    cache.begin_status_write(KEY)
    for rv in events:
        key = cache.put_pdep(_pdep(rv))
        assert cache.held_pdep_event(key, _pdep(rv))
    written = _pdep(answer) if answer is not None else None
    assert cache.end_status_write(KEY, written) is pass_due
    assert not cache.held_pdep_event(KEY, _pdep(9))
