"""The start-up warm-up runs a real pass pipeline: its built-in group stays valid and reaches Ready."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from wideep.api.validate import validate_object
from wideep.reconcile import warmup
from wideep.reconcile.decide import decide


def test_the_warm_up_group_is_valid_and_plans_two_ranks_and_three_services() -> None:
    result = warmup.warm_up(rounds=2)
    assert result.rounds == 2
    assert result.objects == 5


def test_the_warm_up_covers_the_pass_that_finds_the_group_ready() -> None:
    obj = copy.deepcopy(warmup.WARM_UP_GROUP)
    obj["metadata"]["uid"] = "u"
    verdict = validate_object(obj)
    now = dt.datetime.now(dt.UTC)
    first = decide(obj, verdict, [], [], now)
    pods = [warmup._running(o, str(n)) for n, o in enumerate(first.apply) if o["kind"] == "Pod"]
    services = [o for o in first.apply if o["kind"] == "Service"]
    second = decide({**obj, "status": first.status}, verdict, pods, services, now)
    assert not second.apply and not second.delete
    ready = next(c for c in second.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready


def test_an_invalid_warm_up_group_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = copy.deepcopy(warmup.WARM_UP_GROUP)
    bad["spec"]["parallelConfig"]["dataParallelSize"] = 0
    monkeypatch.setattr(warmup, "WARM_UP_GROUP", bad)
    with pytest.raises(ValueError, match="warm-up group is invalid"):
        warmup.warm_up(rounds=1)


def test_the_warm_up_leaves_its_group_untouched() -> None:
    before = copy.deepcopy(warmup.WARM_UP_GROUP)
    warmup.warm_up(rounds=1)
    assert before == warmup.WARM_UP_GROUP
