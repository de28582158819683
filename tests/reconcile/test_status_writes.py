"""Which status changes are written at once, and which are progress figures that may wait."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from wideep.reconcile.reconciler import coming_up, progress_only


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
