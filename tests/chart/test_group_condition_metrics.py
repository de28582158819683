"""wideep_group_condition and wideep_group_ready, which the chart's alerts and dashboard read: one series per
condition type, the old one removed when the status or reason changes, every series of a deleted group
removed, and nothing done when nothing changed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from tests.support.monitoring import scrape
from tests.support.world import World, make_pdep, make_unschedulable
from wideep.api import constants as c
from wideep.api.models import Condition
from wideep.reconcile.metrics import Metrics
from wideep.reconcile.reconciler import Reconciler

NS, NAME = "llm", "ds"
Status = Literal["True", "False", "Unknown"]


def cond(type_: str, status: Status, reason: str) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message="m")


def coming_up(reason: str = c.REASON_RANKS_NOT_READY) -> list[Condition]:
    return [
        cond(c.COND_VALID, "True", c.REASON_SPEC_VALID),
        cond(c.COND_READY, "False", reason),
        cond(c.COND_PROGRESSING, "True", reason),
        cond(c.COND_DEGRADED, "False", c.REASON_HEALTHY),
    ]


def ready() -> list[Condition]:
    return [
        cond(c.COND_VALID, "True", c.REASON_SPEC_VALID),
        cond(c.COND_READY, "True", c.REASON_ALL_RANKS_READY),
        cond(c.COND_PROGRESSING, "False", c.REASON_STABLE),
        cond(c.COND_DEGRADED, "False", c.REASON_HEALTHY),
    ]


def exhausted() -> list[Condition]:
    r = c.REASON_RESTART_BUDGET_EXHAUSTED
    return [
        cond(c.COND_VALID, "True", c.REASON_SPEC_VALID),
        cond(c.COND_READY, "False", r),
        cond(c.COND_PROGRESSING, "False", r),
        cond(c.COND_DEGRADED, "True", r),
    ]


def group_series(m: Metrics, ns: str = NS, name: str = NAME) -> dict[str, float]:
    tag = f'name="{name}", namespace="{ns}"'
    return {
        k: v for k, v in scrape(m).items() if k.startswith("wideep_") and tag in k and "_created" not in k
    }


def conditions_of(m: Metrics, ns: str = NS, name: str = NAME) -> dict[str, tuple[str, str]]:
    """type -> (status, reason) of the wideep_group_condition series of a group; one per type."""
    out: dict[str, tuple[str, str]] = {}
    for k, v in group_series(m, ns, name).items():
        if k.startswith("wideep_group_condition{"):
            assert v == 1.0, k
            labels = dict(p.split("=", 1) for p in k[len("wideep_group_condition{") : -1].split(", "))
            t = labels["type"].strip('"')
            assert t not in out, f"two series for condition {t}"
            out[t] = (labels["status"].strip('"'), labels["reason"].strip('"'))
    return out


def ready_value(m: Metrics, ns: str = NS, name: str = NAME) -> float | None:
    return scrape(m).get(f'wideep_group_ready{{name="{name}", namespace="{ns}"}}')


def test_conditions_are_exported_one_series_per_type() -> None:
    m = Metrics(CollectorRegistry())
    m.set_group_conditions(NS, NAME, coming_up())
    assert conditions_of(m) == {
        "Valid": ("True", "SpecValid"),
        "Ready": ("False", "RanksNotReady"),
        "Progressing": ("True", "RanksNotReady"),
        "Degraded": ("False", "Healthy"),
    }
    assert ready_value(m) == 0


def test_a_changed_reason_replaces_the_old_series() -> None:
    m = Metrics(CollectorRegistry())
    m.set_group_conditions(NS, NAME, coming_up())
    m.set_group_conditions(NS, NAME, coming_up(c.REASON_INSUFFICIENT_CAPACITY))
    assert conditions_of(m)["Ready"] == ("False", "InsufficientCapacity")
    m.set_group_conditions(NS, NAME, ready())
    assert conditions_of(m) == {
        "Valid": ("True", "SpecValid"),
        "Ready": ("True", "AllRanksReady"),
        "Progressing": ("False", "Stable"),
        "Degraded": ("False", "Healthy"),
    }
    assert ready_value(m) == 1
    m.set_group_conditions(NS, NAME, exhausted())
    assert conditions_of(m) == {
        "Valid": ("True", "SpecValid"),
        "Ready": ("False", "RestartBudgetExhausted"),
        "Progressing": ("False", "RestartBudgetExhausted"),
        "Degraded": ("True", "RestartBudgetExhausted"),
    }
    assert ready_value(m) == 0
    # Same reason, other status: the status is a label too, so the old series goes.
    m.set_group_conditions(NS, NAME, [cond(c.COND_READY, "Unknown", c.REASON_RESTART_BUDGET_EXHAUSTED)])
    assert conditions_of(m) == {"Ready": ("Unknown", "RestartBudgetExhausted")}, "vanished types are removed"
    assert ready_value(m) == 0
    m.set_group_conditions(NS, NAME, [])
    assert conditions_of(m) == {}
    assert ready_value(m) == 0, "no Ready condition: not Ready"


def test_groups_are_independent_and_a_deleted_group_leaves_no_series() -> None:
    m = Metrics(CollectorRegistry())
    m.set_group_conditions(NS, NAME, exhausted())
    m.set_group_conditions(NS, "other", ready())
    m.set_group_conditions("team-b", NAME, coming_up())
    m.ranks_ready.labels(NS, NAME).set(3)
    m.ranks_total.labels(NS, NAME).set(4)
    m.group_restarts.labels(NS, NAME).inc()
    m.forget_group(NS, NAME)
    assert group_series(m) == {}, "no series of the deleted group"
    assert conditions_of(m, NS, "other")["Ready"] == ("True", "AllRanksReady")
    assert conditions_of(m, "team-b", NAME)["Ready"] == ("False", "RanksNotReady")
    m.forget_group(NS, NAME)  # again (every pass of a deleted key): nothing to do, no error
    m.forget_group("nowhere", "never-seen")
    m.set_group_conditions(NS, NAME, ready())  # a group of the same name, created again
    assert conditions_of(m)["Ready"] == ("True", "AllRanksReady")
    assert ready_value(m) == 1


def test_an_unchanged_status_costs_no_metric_update() -> None:
    m = Metrics(CollectorRegistry())
    calls: list[tuple[str, ...]] = []
    labels = m.group_condition.labels

    def counting(*values: str) -> Any:
        calls.append(values)
        return labels(*values)

    m.group_condition.labels = counting  # type: ignore[method-assign,assignment]
    m.set_group_conditions(NS, NAME, coming_up())
    assert len(calls) == 4
    for _ in range(3):
        m.set_group_conditions(NS, NAME, coming_up())  # new objects, same content
    assert len(calls) == 4, "nothing changed: no label lookups"
    m.set_group_conditions(NS, NAME, coming_up(c.REASON_INSUFFICIENT_CAPACITY))
    assert len(calls) == 6, "only the two changed conditions"


def test_the_conditions_decide_reports_reach_the_gauges() -> None:
    """decide()'s typed status (Decision.state, what Reconciler._act exports) through coming up, Ready,
    unschedulable ranks and an exhausted restart budget."""
    m = Metrics(CollectorRegistry())
    w = World(make_pdep(4, backoffSeconds=0))

    def export() -> dict[str, tuple[str, str]]:
        d = w.step()
        m.set_group_conditions("ns", "g", d.state.conditions)
        return conditions_of(m, "ns", "g")

    assert export()[c.COND_READY][0] == "False"
    assert ready_value(m, "ns", "g") == 0
    w.run_all()
    assert export()[c.COND_READY] == ("True", c.REASON_ALL_RANKS_READY)
    assert ready_value(m, "ns", "g") == 1
    make_unschedulable(w.pods["g-3"])
    assert export()[c.COND_READY] == ("False", c.REASON_INSUFFICIENT_CAPACITY)
    assert ready_value(m, "ns", "g") == 0
    w.run_all()
    assert export()[c.COND_READY] == ("True", c.REASON_ALL_RANKS_READY)
    for i in range(3):
        w.fail(f"g-{i}")
        export()
        if i < 2:
            export()
            w.run_all()
            export()
    assert export() == {
        "Valid": ("True", "SpecValid"),
        "Ready": ("False", "RestartBudgetExhausted"),
        "Progressing": ("False", "RestartBudgetExhausted"),
        "Degraded": ("True", "RestartBudgetExhausted"),
    }
    assert ready_value(m, "ns", "g") == 0


def test_the_reconciler_forgets_the_series_of_a_deleted_group() -> None:
    """A pass over a key whose ParallelDeployment is gone removes its series (no alert for a deleted group)."""
    m = Metrics(CollectorRegistry())
    m.set_group_conditions(NS, NAME, exhausted())
    m.ranks_total.labels(NS, NAME).set(4)
    cache = SimpleNamespace(pdeps={}, forget=lambda key: None)
    r = Reconciler(kube=None, cache=cache, queue=None, metrics=m)  # type: ignore[arg-type]
    assert asyncio.run(r.reconcile((NS, NAME))) is None
    assert group_series(m) == {}
