"""LeaderElector's error paths and Lease bookkeeping, against a scripted API (the happy paths, takeover and
loss run on the real API server in tests/e2e/test_leader_election.py)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from wideep.kube.client import KubeError
from wideep.kube.leader import LeaderElector, lease_path


class ScriptedApi:
    """Answers GET/POST/PUT of one Lease from a dict; ``fail`` maps a method to the KubeError it raises."""

    def __init__(self, lease: dict[str, Any] | None = None) -> None:
        self.lease = lease
        self.fail: dict[str, KubeError] = {}
        self.calls: list[str] = []
        self.rv = 1
        self.hang: Clock | None = None  # requests never answer; each advances this clock by 0.1 s

    async def request(
        self, method: str, path: str, *, body: Any = None, retries: int = 4, unlimited: bool = False
    ) -> Any:
        assert unlimited, "Lease calls must not queue behind the writes"
        self.calls.append(method)
        if self.hang is not None:
            self.hang.now += 0.1
            await asyncio.sleep(30)
        if method in self.fail:
            raise self.fail[method]
        if method == "GET":
            if self.lease is None:
                raise KubeError(404, "NotFound", "leases not found")
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise KubeError(409, "AlreadyExists", "exists")
        elif method == "PUT":
            assert self.lease is not None
            if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
                raise KubeError(409, "Conflict", "the object has been modified")
        self.rv += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def held_by(who: str, transitions: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "l", "namespace": "ns", "resourceVersion": "1"},
        "spec": {
            "holderIdentity": who,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z",
            "leaseTransitions": transitions,
        },
    }


def elector(api: ScriptedApi, clock: Clock | None = None, **kw: float) -> LeaderElector:
    return LeaderElector(api, "ns", "l", "me", clock=clock or Clock(), **kw)  # type: ignore[arg-type]


def test_the_first_replica_creates_the_lease() -> None:
    api = ScriptedApi()
    assert asyncio.run(elector(api).try_acquire_or_renew())
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "me"
    assert api.lease["spec"]["leaseTransitions"] == 0
    assert api.calls == ["GET", "POST"]


def test_losing_the_race_to_create_it_is_not_an_error() -> None:
    api = ScriptedApi()
    api.fail["POST"] = KubeError(409, "AlreadyExists", "exists")
    assert not asyncio.run(elector(api).try_acquire_or_renew())


def test_a_lease_renewed_by_another_is_left_alone_until_it_runs_out_on_our_clock() -> None:
    api, clock = ScriptedApi(held_by("other", transitions=2)), Clock()
    e = elector(api, clock)
    assert not asyncio.run(e.try_acquire_or_renew())
    clock.now += 14.9
    assert not asyncio.run(e.try_acquire_or_renew()), "15 s have not passed since we saw it change"
    clock.now += 0.2
    assert asyncio.run(e.try_acquire_or_renew())
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "me"
    assert api.lease["spec"]["leaseTransitions"] == 3
    assert api.lease["spec"]["acquireTime"] != "2026-01-01T00:00:00.000000Z"


def test_a_lease_that_changes_is_not_taken_over() -> None:
    api, clock = ScriptedApi(held_by("other")), Clock()
    e = elector(api, clock)
    for _ in range(5):
        assert not asyncio.run(e.try_acquire_or_renew())
        clock.now += 10
        assert api.lease is not None
        api.lease["metadata"]["resourceVersion"] = str(int(api.lease["metadata"]["resourceVersion"]) + 1)


def test_a_released_lease_is_taken_at_once() -> None:
    lease = held_by("")
    assert asyncio.run(elector(ScriptedApi(lease)).try_acquire_or_renew())


def test_renewing_keeps_the_acquire_time_and_transitions() -> None:
    api = ScriptedApi(held_by("me", transitions=4))
    assert asyncio.run(elector(api).try_acquire_or_renew())
    assert api.lease is not None
    assert api.lease["spec"]["acquireTime"] == "2026-01-01T00:00:00.000000Z"
    assert api.lease["spec"]["leaseTransitions"] == 4
    assert api.lease["spec"]["renewTime"] != "2026-01-01T00:00:00.000000Z"


def test_a_conflicting_write_means_someone_else_won() -> None:
    api = ScriptedApi(held_by("me"))
    api.fail["PUT"] = KubeError(409, "Conflict", "modified")
    assert not asyncio.run(elector(api).try_acquire_or_renew())


def test_hold_gives_up_after_the_renew_deadline_of_failed_renewals() -> None:
    api, clock = ScriptedApi(held_by("me")), Clock()
    e = elector(api, clock, lease_seconds=0.3, renew_deadline_seconds=0.2, retry_seconds=0.01)
    e.leading = True
    api.fail["GET"] = KubeError(0, "ConnectionError", "refused")

    async def scenario() -> int:
        task = asyncio.ensure_future(e.hold())
        turns = 0
        while not task.done():
            await asyncio.sleep(0.012)
            clock.now += 0.05  # renewals keep failing while the clock runs
            turns += 1
        await task
        return turns

    turns = asyncio.run(scenario())
    assert not e.leading
    assert 3 <= turns <= 8, f"gave up after {turns} failed renewals (deadline 0.2 s, 0.05 s each)"


def test_a_renewal_that_never_answers_does_not_outlive_the_deadline() -> None:
    api, clock = ScriptedApi(held_by("me")), Clock()
    e = elector(api, clock, lease_seconds=0.5, renew_deadline_seconds=0.2, retry_seconds=0.01)
    e.leading = True
    api.hang = clock
    asyncio.run(asyncio.wait_for(e.hold(), timeout=5))
    assert not e.leading
    assert 2 <= len(api.calls) <= 3, api.calls


def test_hold_returns_at_once_when_another_replica_holds_the_lease() -> None:
    api, clock = ScriptedApi(held_by("me")), Clock()
    e = elector(api, clock, lease_seconds=3, renew_deadline_seconds=2, retry_seconds=0.01)
    e.leading = True
    api.lease = held_by("other")
    asyncio.run(asyncio.wait_for(e.hold(), timeout=2))
    assert not e.leading


def test_release_empties_the_holder_only_if_it_is_us() -> None:
    api = ScriptedApi(held_by("me"))
    e = elector(api)
    e.leading = True
    asyncio.run(e.release())
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == ""
    api2 = ScriptedApi(held_by("other"))
    e2 = elector(api2)
    e2.leading = True
    asyncio.run(e2.release())
    assert api2.lease is not None and api2.lease["spec"]["holderIdentity"] == "other"


@pytest.mark.parametrize(("lease", "deadline", "retry"), [(15, 15, 2), (15, 10, 10), (15, 10, 0)])
def test_timings_must_nest(lease: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        elector(ScriptedApi(), lease_seconds=lease, renew_deadline_seconds=deadline, retry_seconds=retry)


def test_the_default_timings_are_shares_of_the_lease() -> None:
    e = elector(ScriptedApi(), lease_seconds=15)
    assert (e.renew_deadline_seconds, e.retry_seconds) == pytest.approx((10.0, 2.0))


def test_lease_path() -> None:
    assert lease_path("ns", "l") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"
