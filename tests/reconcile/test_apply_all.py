"""Reconciler._apply_all: each write is on its way before the next one is prepared, and none is left running
when the pass is cancelled."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from wideep.reconcile.reconciler import Reconciler


class Writes:
    """Stands in for Reconciler._apply: a write is 'prepared' when it starts and 'sent' one turn of the event
    loop later (aiohttp sends a request body from a task of its own)."""

    def __init__(self, fail: set[str] | None = None, hold: asyncio.Event | None = None) -> None:
        self.log: list[str] = []
        self.fail = fail or set()
        self.hold = hold
        self.running: set[str] = set()

    async def apply(self, key: Any, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        self.log.append(f"prepare {name}")
        self.running.add(name)
        try:
            await asyncio.sleep(0)
            self.log.append(f"send {name}")
            if self.hold is not None:
                await self.hold.wait()
        finally:
            self.running.discard(name)
        if name in self.fail:
            raise RuntimeError(f"{name} refused")
        return {"metadata": {"name": name, "resourceVersion": "1"}}


def fake(writes: Writes, concurrency: int = 64) -> Any:
    return SimpleNamespace(kube=SimpleNamespace(concurrency=concurrency), _apply=writes.apply)


def objs(n: int) -> list[dict[str, Any]]:
    return [{"kind": "Pod", "metadata": {"name": f"p{i}"}} for i in range(n)]


def test_each_write_is_sent_before_the_next_is_prepared() -> None:
    w = Writes()
    out = asyncio.run(Reconciler._apply_all(fake(w), ("ns", "g"), objs(4)))
    assert [o["metadata"]["name"] for o in out] == ["p0", "p1", "p2", "p3"]
    for i in range(3):
        assert w.log.index(f"send p{i}") < w.log.index(f"prepare p{i + 1}"), w.log


def test_writes_started_at_once_are_all_prepared_before_the_first_is_sent() -> None:
    """What _apply_all does past the concurrency, and what a plain gather did to every write (so the test
    above can fail)."""
    w = Writes()
    asyncio.run(Reconciler._apply_all(fake(w, concurrency=0), ("ns", "g"), objs(4)))
    assert w.log.index("prepare p3") < w.log.index("send p0")


def test_past_the_concurrency_writes_are_started_at_once() -> None:
    w = Writes()
    asyncio.run(Reconciler._apply_all(fake(w, concurrency=2), ("ns", "g"), objs(5)))
    assert w.log.index("send p0") < w.log.index("prepare p1")
    assert w.log.index("prepare p4") < w.log.index("send p3"), w.log


def test_failures_come_back_as_outcomes_in_order() -> None:
    w = Writes(fail={"p1"})
    out = asyncio.run(Reconciler._apply_all(fake(w), ("ns", "g"), objs(3)))
    assert isinstance(out[1], RuntimeError) and str(out[1]) == "p1 refused"
    assert out[0]["metadata"]["name"] == "p0" and out[2]["metadata"]["name"] == "p2"


@pytest.mark.parametrize("cancel_after_turns", [1, 3, 20])
def test_cancelling_the_pass_cancels_every_started_write(cancel_after_turns: int) -> None:
    async def scenario() -> Writes:
        w = Writes(hold=asyncio.Event())
        task = asyncio.ensure_future(Reconciler._apply_all(fake(w), ("ns", "g"), objs(6)))
        for _ in range(cancel_after_turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert w.log, "no write had started"
        assert not w.running, f"writes left running: {w.running}"
        return w

    asyncio.run(scenario())
