"""The work queue: pacing holds a key's next pass, an urgent add is not held."""

from __future__ import annotations

import asyncio

import pytest

from wideep.kube.cache import Key
from wideep.kube.workqueue import WorkQueue
from wideep.reconcile.reconciler import PACE_MAX_SECONDS, pace_seconds

KEY: Key = ("ns", "g")


async def _run(urgent: bool, while_active: bool) -> list[float]:
    loop = asyncio.get_running_loop()
    queue = WorkQueue()
    passes: list[float] = []
    release = asyncio.Event()

    async def process(key: Key) -> None:
        passes.append(loop.time())
        if len(passes) == 1:
            queue.pace(key, 0.5)  # as the reconciler does after each pass
            if while_active:
                queue.add(key, urgent=urgent)
            await release.wait()

    queue.start(1, process)
    t0 = loop.time()
    queue.add(KEY)
    await asyncio.sleep(0.05)
    release.set()
    if not while_active:
        queue.add(KEY, urgent=urgent)
    await asyncio.sleep(0.7)
    await queue.stop()
    return [t - t0 for t in passes]


def test_pacing_holds_the_next_pass() -> None:
    for while_active in (False, True):
        passes = asyncio.run(_run(urgent=False, while_active=while_active))
        assert len(passes) == 2 and passes[1] >= 0.5, passes


def test_an_urgent_add_is_not_held() -> None:
    for while_active in (False, True):
        passes = asyncio.run(_run(urgent=True, while_active=while_active))
        assert len(passes) == 2 and passes[1] < 0.2, passes


@pytest.mark.parametrize(
    ("cost", "last", "wait"),
    [
        (0.001, 0.001, 0.005),  # a pass of 8 ranks: ~5 ms
        (0.047, 0.001, 0.005),  # one slow pass among fast ones does not hold the next for 0.23 s
        (0.001, 0.047, 0.005),  # nor does the fast pass after it
        (0.05, 0.04, 0.2),  # a big group, slow pass after slow pass
        (0.5, 0.4, PACE_MAX_SECONDS),  # capped
        (0.0, 0.0, 0.0),
    ],
)
def test_pace_follows_the_cheaper_of_the_last_two_passes(cost: float, last: float, wait: float) -> None:
    assert pace_seconds(cost, last) == pytest.approx(wait)
