"""Which status changes are written at once, and which are progress figures that may wait."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.world import World, make_pdep
from wideep.reconcile.decide import Decision
from wideep.reconcile.writes import (
    StatusWrite,
    choose_status_write,
    coming_up,
    creates_put_off,
    progress_only,
    settle_wait,
    status_after_writes,
)


def status() -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "groupGeneration": 1,
        "createdGeneration": 1,
        "ready": "1/2",
        "readyRanks": 1,
        "totalRanks": 2,
        "ranks": [
            {"rank": 0, "pod": "g-0", "phase": "Running", "ready": True, "node": "n1", "restarts": 0},
            {"rank": 1, "pod": "g-1", "phase": "Pending", "ready": False},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "RanksNotReady",
                "message": "1/2 DP ranks ready",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-11-27T00:00:00Z",
            },
        ],
    }


def _rank_ready(s: dict[str, Any]) -> None:
    s["ranks"][1].update(phase="Running", ready=True, node="n2")
    s["readyRanks"], s["ready"] = 2, "2/2"
    s["conditions"][0]["message"] = "2/2 DP ranks ready"


def _became_ready(s: dict[str, Any]) -> None:
    _rank_ready(s)
    s["conditions"][0].update(status="True", reason="AllRanksReady")


def _failure(s: dict[str, Any]) -> None:
    s["ranks"][1]["lastFailure"] = {"reason": "Error", "exitCode": 1, "pod": "g-1", "groupGeneration": 1}


def _generation(s: dict[str, Any]) -> None:
    s["groupGeneration"] = 2


def _reason(s: dict[str, Any]) -> None:
    s["conditions"][0]["reason"] = "InsufficientCapacity"


def _creating_to_waiting(s: dict[str, Any]) -> None:
    s["conditions"][0].update(reason="CreatingGroup", message="1/2 rank pods created")


def _spec_seen(s: dict[str, Any]) -> None:
    s["observedGeneration"] = 2


def _rank_added(s: dict[str, Any]) -> None:
    s["ranks"].append({"rank": 2, "pod": "g-2"})


@pytest.mark.parametrize(
    ("change", "progress"),
    [
        (_rank_ready, True),
        (_became_ready, False),
        (_failure, False),
        (_generation, False),
        (_reason, False),
        (_creating_to_waiting, True),
        (_spec_seen, False),
        (_rank_added, False),
    ],
)
def test_progress_only(change: Callable[[dict[str, Any]], None], progress: bool) -> None:
    old = status()
    new = copy.deepcopy(old)
    change(new)
    assert progress_only(old, new) is progress


def test_first_status_is_never_progress_only() -> None:
    assert not progress_only(None, status())


def _with(ready: tuple[str, str], valid: str = "True", degraded: str = "False") -> dict[str, Any]:
    s = status()
    s["conditions"] = [
        {"type": "Valid", "status": valid, "reason": "SpecValid"},
        {"type": "Ready", "status": ready[0], "reason": ready[1]},
        {"type": "Degraded", "status": degraded, "reason": "Healthy"},
    ]
    return s


@pytest.mark.parametrize(
    ("s", "held"),
    [
        (_with(("False", "CreatingGroup")), True),
        (_with(("False", "RanksNotReady")), True),
        (_with(("True", "AllRanksReady")), False),  # Ready is news
        (_with(("False", "InsufficientCapacity")), False),  # so is a group that cannot be scheduled
        (_with(("False", "RankFailed"), degraded="True"), False),
        (_with(("False", "CreatingGroup"), degraded="True"), False),
        (_with(("False", "CreatingGroup"), valid="False"), False),
        ({}, False),
    ],
)
def test_only_a_group_coming_up_may_hold_its_first_status(s: dict[str, Any], held: bool) -> None:
    assert coming_up(s) is held


# ------------------------------------------------------------- when a status is written (choose_status_write)

COMING = _with(("False", "RanksNotReady"))
READY = _with(("True", "AllRanksReady"))


def _progressed(s: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(s)
    _rank_ready(out)
    return out


@pytest.mark.parametrize(
    ("stored", "new", "held_since", "last_written", "want", "after"),
    [
        (COMING, COMING, None, 5.0, StatusWrite.NONE, 0.0),  # nothing changed
        (None, COMING, None, None, StatusWrite.HOLD_FIRST, 2.0),  # a new group's first status, coming up
        (COMING, COMING, 9.5, None, StatusWrite.HOLD_FIRST, 1.5),  # still held, the rest of the window
        (COMING, COMING, 7.0, None, StatusWrite.NOW, 0.0),  # held for the whole window: written
        (None, READY, None, None, StatusWrite.NOW, 0.0),  # a first status that says Ready: at once
        (COMING, READY, 9.5, None, StatusWrite.NOW, 0.0),  # the held group became Ready
        (None, _with(("False", "InsufficientCapacity")), None, None, StatusWrite.NOW, 0.0),
        (COMING, _progressed(COMING), None, 9.0, StatusWrite.LATER, 1.0),  # progress within the window
        (COMING, _progressed(COMING), None, 7.0, StatusWrite.NOW, 0.0),  # progress after it
        (COMING, READY, None, 9.9, StatusWrite.NOW, 0.0),  # not progress: at once
        ({}, COMING, None, None, StatusWrite.HOLD_FIRST, 2.0),  # an empty stored status is none
    ],
    ids=[
        "unchanged",
        "first-held",
        "still-held",
        "held-long-enough",
        "first-ready",
        "held-then-ready",
        "first-unschedulable",
        "progress-waits",
        "progress-due",
        "news-now",
        "empty-stored",
    ],
)
def test_when_a_status_is_written(
    stored: dict[str, Any] | None,
    new: dict[str, Any],
    held_since: float | None,
    last_written: float | None,
    want: StatusWrite,
    after: float,
) -> None:
    choice = choose_status_write(
        stored, new, held_since=held_since, last_written=last_written, now=10.0, progress_seconds=2.0
    )
    assert (choice.write, choice.after) == (want, pytest.approx(after))


@pytest.mark.parametrize(
    ("gone", "want"),
    [(None, 0.0), (9.0, 0.5), (8.5, 0.0), (5.0, 0.0)],
    ids=["never", "just", "edge", "long-ago"],
)
def test_creates_wait_for_the_settle_window(gone: float | None, want: float) -> None:
    assert settle_wait(gone, 10.0, 1.5) == pytest.approx(want)


def _decision() -> Decision:
    w = World(make_pdep(2))
    return w.step()  # the first pass: creates every pod, fills generation 1


def test_the_status_after_writes_records_the_filled_generation_or_the_refusals() -> None:
    d = _decision()
    assert d.fills_generation == 1 and d.status["createdGeneration"] == 0
    assert status_after_writes(d, [])["createdGeneration"] == 1
    refused = status_after_writes(d, ["Pod g-1: forbidden", "Pod g-0: forbidden"])
    assert refused["createdGeneration"] == 0  # a refused create: the generation is not filled
    progressing = next(cd for cd in refused["conditions"] if cd["type"] == "Progressing")
    assert (
        progressing["message"]
        == "the API server refused planned writes, retrying: Pod g-1: forbidden (+1 more)"
    )
    assert d.status["createdGeneration"] == 0, "the decision itself is left as it was"
    put_off = creates_put_off(d)
    assert put_off.fills_generation is None and not [o for o in put_off.apply if o["kind"] == "Pod"]
    assert status_after_writes(put_off, []) is put_off.status
