"""The Argo CD health check (Lua) for ParallelDeployment, run by a real Lua 5.1 interpreter.

Argo CD runs resource health checks with gopher-lua, a Lua 5.1 implementation, with the live object in the
global ``obj``; so does this test, through lupa's embedded Lua 5.1 (PyPI ``lupa``, a dev dependency).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.builders import parallel_deployment
from tests.support.chart import argocd_health
from wideep.api import constants as c


def cond(type_: str, status: bool, reason: str, message: str = "", generation: int = 3) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message or reason,
        "observedGeneration": generation,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }


def pdep(
    conditions: list[dict[str, Any]] | None, generation: int = 3, observed: int | None = 3
) -> dict[str, Any]:
    status: dict[str, Any] | None = None
    if conditions is not None:
        status = {"conditions": conditions, "ready": "16/16"}
        if observed is not None:
            status["observedGeneration"] = observed
    return parallel_deployment(
        "deepseek-v3",
        namespace="llm",
        generation=generation,
        parallel_config={"dataParallelSize": 16},
        status=status,
    )


VALID = cond(c.COND_VALID, True, c.REASON_SPEC_VALID, "spec is valid")
HEALTHY = [
    VALID,
    cond(c.COND_READY, True, c.REASON_ALL_RANKS_READY, "all 16 DP ranks ready in 16 pods"),
    cond(c.COND_PROGRESSING, False, c.REASON_STABLE),
    cond(c.COND_DEGRADED, False, c.REASON_HEALTHY),
]


def test_healthy_when_ready_for_the_current_generation() -> None:
    assert argocd_health(pdep(HEALTHY)) == {
        "status": "Healthy",
        "message": "all 16 DP ranks ready in 16 pods",
    }


def test_progressing_without_status() -> None:
    hs = argocd_health(pdep(None))
    assert hs["status"] == "Progressing"
    assert "operator" in hs["message"]


def test_progressing_when_status_is_stale() -> None:
    """Ready=True of generation 3 says nothing about generation 4: the operator has not seen it yet."""
    hs = argocd_health(pdep(HEALTHY, generation=4, observed=3))
    assert hs == {
        "status": "Progressing",
        "message": "Waiting for the wideep operator to observe generation 4",
    }


def test_progressing_while_the_group_is_created() -> None:
    msg = "5/16 rank pods created"
    conds = [
        VALID,
        cond(c.COND_READY, False, c.REASON_CREATING, msg),
        cond(c.COND_PROGRESSING, True, c.REASON_CREATING, msg),
        cond(c.COND_DEGRADED, False, c.REASON_HEALTHY, "no failed ranks"),
    ]
    assert argocd_health(pdep(conds)) == {"status": "Progressing", "message": msg}


def test_progressing_while_ranks_start_and_while_replacing() -> None:
    for reason in (c.REASON_WAITING_FOR_RANKS, c.REASON_ROLLING_OUT, c.REASON_INSUFFICIENT_CAPACITY):
        conds = [
            VALID,
            cond(c.COND_READY, False, c.REASON_RANKS_NOT_READY, "3/16 DP ranks ready"),
            cond(c.COND_PROGRESSING, True, reason, "waiting"),
            cond(c.COND_DEGRADED, False, c.REASON_HEALTHY, "no failed ranks"),
        ]
        assert argocd_health(pdep(conds))["status"] == "Progressing", reason


def test_degraded_while_a_failed_group_restarts() -> None:
    msg = "rank 3 failed; group restart in 10s (backoff)"
    conds = [
        VALID,
        cond(c.COND_READY, False, c.REASON_RESTART_BACKOFF, msg),
        cond(c.COND_PROGRESSING, True, c.REASON_RESTART_BACKOFF, msg),
        cond(c.COND_DEGRADED, True, c.REASON_RANK_FAILED, msg),
    ]
    assert argocd_health(pdep(conds)) == {"status": "Degraded", "message": msg}


def test_degraded_when_the_restart_budget_is_exhausted() -> None:
    msg = "rank 3 failed; restart budget of 3 exhausted (set annotation wideep.dev/retry to retry)"
    conds = [
        VALID,
        cond(c.COND_READY, False, c.REASON_RESTART_BUDGET_EXHAUSTED, msg),
        cond(c.COND_PROGRESSING, False, c.REASON_RESTART_BUDGET_EXHAUSTED, msg),
        cond(c.COND_DEGRADED, True, c.REASON_RESTART_BUDGET_EXHAUSTED, msg),
    ]
    assert argocd_health(pdep(conds)) == {"status": "Degraded", "message": msg}
    # Even if only Ready carried the reason (older operator), the budget is what Argo CD shows.
    only_ready = copy.deepcopy(conds)
    only_ready[3] = cond(c.COND_DEGRADED, False, c.REASON_HEALTHY)
    assert argocd_health(pdep(only_ready)) == {"status": "Degraded", "message": msg}


def test_degraded_when_the_spec_is_invalid_even_if_the_old_group_is_ready() -> None:
    """An invalid change leaves the running group untouched (Ready stays True) but Valid=False."""
    conds = copy.deepcopy(HEALTHY)
    conds[0] = cond(
        c.COND_VALID, False, c.REASON_INVALID_SPEC, "spec.parallelConfig.dataParallelSize: must be > 0"
    )
    hs = argocd_health(pdep(conds))
    assert hs == {
        "status": "Degraded",
        "message": "Invalid spec: spec.parallelConfig.dataParallelSize: must be > 0",
    }


def test_degraded_when_restarts_are_disabled_and_a_rank_failed() -> None:
    msg = "rank 0 failed; restartPolicy Never: the group is left as it is"
    conds = [
        VALID,
        cond(c.COND_READY, False, c.REASON_RANK_FAILED, msg),
        cond(c.COND_PROGRESSING, False, c.REASON_RESTARTS_DISABLED, msg),
        cond(c.COND_DEGRADED, True, c.REASON_RANK_FAILED, msg),
    ]
    assert argocd_health(pdep(conds))["status"] == "Degraded"


@pytest.mark.parametrize("missing", ["message", "reason", "observedGeneration"])
def test_tolerates_sparse_conditions(missing: str) -> None:
    conds = copy.deepcopy(HEALTHY)
    for item in conds:
        item.pop(missing, None)
    assert argocd_health(pdep(conds))["status"] == "Healthy"


def test_metadata_without_generation_is_not_stale() -> None:
    obj = pdep(HEALTHY)
    del obj["metadata"]["generation"]
    assert argocd_health(obj)["status"] == "Healthy"
