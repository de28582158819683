"""Observe → decide → act for one ParallelDeployment."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from wideep import defaults
from wideep.api.models import GroupChange, ParallelDeployment
from wideep.api.validate import Verdict, validate_object
from wideep.kube.cache import UPDATE_OWNED, Cache, Key
from wideep.kube.client import KubeClient, KubeError
from wideep.kube.managed_fields import needs_upgrade, upgraded
from wideep.kube.workqueue import WorkQueue
from wideep.planning.planner import GroupPlan, plan

from .decide import Decision, EventSpec, decide, iso, parse_iso
from .metrics import Metrics
from .writes import StatusWrite, choose_status_write, creates_put_off, settle_wait, status_after_writes

log = logging.getLogger("wideep.reconcile")

ERROR_BACKOFF_SECONDS = 5.0
SETTLE_SECONDS = 1.5
PLAN_CACHE = 256


# Pacing: after a pass whose own computation took t seconds, the group's next pass waits PACE_FACTOR * t (at
# most PACE_MAX_SECONDS), so that the events of a group coming up are merged into few passes and the cores
# stay with the API server, the scheduler and the kubelets (docs/architecture.md, "Measured choices"). The
# pass after the event that makes a group's last pod Ready is not held (Cache.pop_completed).
PACE_FACTOR = 5.0
PACE_MAX_SECONDS = 1.0
VERDICT_CACHE = 256
REJECTED_RECHECK_SECONDS = 30.0


def pace_seconds(cost: float, last: float) -> float:
    """How long a group's next pass waits after one that cost ``cost`` s (the one before cost ``last``).

    From the smaller of the two: a single slow pass (the process preempted, a garbage collection) says nothing
    about the next one; a group that grew costs more on two passes running and is paced by that."""
    return min(PACE_MAX_SECONDS, PACE_FACTOR * min(cost, last))


@dataclasses.dataclass
class PendingStatus:
    """The first status of a new group, held back while the group comes up (see Reconciler._act).

    Passes meanwhile decide from it as if it were stored, as long as nothing is stored yet (nobody else
    wrote a status); the events of those passes wait with it, so that none is posted before the
    status that records it. Lost if the operator stops: the next one finds an object without status, as
    after a stop between the creates and the status write."""

    status: dict[str, Any]
    events: list[EventSpec]
    since: float  # monotonic time of the pass that first held it back


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        cache: Cache,
        queue: WorkQueue,
        metrics: Metrics,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        resync_seconds: float = defaults.RESYNC_SECONDS,
        status_progress_seconds: float = defaults.STATUS_PROGRESS_SECONDS,
    ) -> None:
        self.resync_seconds = resync_seconds
        self._plans: OrderedDict[tuple[str, int, int], GroupPlan] = OrderedDict()
        self._verdicts: OrderedDict[tuple[str, int], Verdict] = OrderedDict()
        self._rejections: dict[tuple[str, int], tuple[str | None, float]] = {}  # dry-run verdicts of specs
        self.kube = kube
        self.cache = cache
        self.queue = queue
        self.metrics = metrics
        self.clock = clock
        self._apply_errors: dict[Key, str] = {}
        self._status_written: dict[Key, float] = {}  # monotonic time of the last status write
        self._pending: dict[Key, PendingStatus] = {}  # first statuses held back (PendingStatus)
        self._pass_cpu: dict[Key, float] = {}  # seconds of the current pass's own computation
        self._last_cost: dict[Key, float] = {}  # the previous pass's (pacing)
        self._planning = 0.0  # seconds spent validating and planning afresh during the current pass
        self.status_progress_seconds = status_progress_seconds

    async def process(self, key: Key) -> None:
        started = time.perf_counter()
        try:
            delay = await self.reconcile(key)
        except Exception as exc:
            self.metrics.reconcile_errors.inc()
            log.warning(
                "reconcile of %s/%s failed, retrying in %.0fs: %s", key[0], key[1], ERROR_BACKOFF_SECONDS, exc
            )
            self.queue.add_after(key, ERROR_BACKOFF_SECONDS)
            return
        finally:
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)
        if key in self.cache.pdeps:
            cost = self._pass_cpu.pop(key, 0.0)
            self.queue.pace(key, pace_seconds(cost, self._last_cost.get(key, cost)))
            self._last_cost[key] = cost
            self.queue.add_after(key, delay if delay is not None else self.resync_seconds)

    def _validate(self, pdep: dict[str, Any]) -> Verdict:
        """validate_object() memoised per (uid, generation): the spec only changes with the generation."""
        meta = pdep["metadata"]
        mk = (str(meta.get("uid")), int(meta.get("generation") or 0))
        hit = self._verdicts.get(mk)
        if hit is None:
            t0 = time.perf_counter()
            hit = validate_object(pdep)
            self._planning += time.perf_counter() - t0
            self._verdicts[mk] = hit
            while len(self._verdicts) > VERDICT_CACHE:
                self._verdicts.popitem(last=False)
        else:
            self._verdicts.move_to_end(mk)
        return hit

    def _plan(self, obj: ParallelDeployment, group_generation: int) -> GroupPlan:
        """plan() is pure: memoised per (uid, generation, group generation), as large groups take long to plan."""
        mk = (str(obj.metadata.get("uid")), int(obj.metadata.get("generation") or 0), group_generation)
        hit = self._plans.get(mk)
        if hit is None:
            t0 = time.perf_counter()
            hit = plan(obj, group_generation=group_generation)
            self._planning += time.perf_counter() - t0
            self._plans[mk] = hit
            while len(self._plans) > PLAN_CACHE:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(mk)
        return hit

    async def reconcile(self, key: Key) -> float | None:
        pdep = self.cache.pdeps.get(key)
        if pdep is None or pdep["metadata"].get("deletionTimestamp"):
            self._status_written.pop(key, None)
            self._pending.pop(key, None)
            self._last_cost.pop(key, None)
            self.cache.forget(key)
            self.metrics.forget_group(*key)
            return None  # children carry ownerReferences: the garbage collector removes them
        pending = self._pending.get(key)
        if pending is not None:
            if not pdep.get("status"):
                pdep = {**pdep, "status": pending.status}
            else:  # another client wrote a status meanwhile: decide from what is stored
                del self._pending[key]
        uid = pdep["metadata"]["uid"]
        now = self.clock()
        computing, self._planning = time.perf_counter(), 0.0
        verdict = self._validate(pdep)
        pods = self.cache.owned("Pod", key, uid)
        services = self.cache.owned("Service", key, uid)
        d = decide(pdep, verdict, pods, services, now, self._plan)
        if d.plan is not None:
            self.cache.expected_pods[key] = len(d.plan.pods)
        # A new validation or plan is made once per spec and generation: it does not say what the next pass
        # costs. No await since the pass began, so self._planning holds this pass's planning only.
        self._pass_cpu[key] = time.perf_counter() - computing - self._planning
        if d.restarted:
            # A gang restart costs every rank its start-up (minutes at scale): confirm the incident
            # against the API server, not only the watch cache, before acting on it.
            # Every pod of the namespace, filtered by owner: labels may have been edited by someone else.
            pods = [
                p
                for p in await self.kube.list_objects("Pod", key[0])
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
            ]
            for p in pods:
                self.cache.put_child(p, note=False)
            d = decide(pdep, verdict, pods, services, now, self._plan)
        if d.deletes_a_generation and d.state.last_group_change == GroupChange.REPLACED:
            # Replacing a running group deletes it first: make sure the API server takes the new pods.
            assert d.plan is not None
            rejected = await self._pods_rejected(pdep, d.plan.pods[0].body)
            if rejected is not None:
                d = decide(pdep, verdict, pods, services, now, self._plan, rejected=rejected)
        await self._act(key, pdep, d, now)
        return d.requeue_after

    async def _pods_rejected(self, pdep: dict[str, Any], pod: dict[str, Any]) -> str | None:
        """The API server's refusal of a rank pod of this spec (a dry-run create: validation and admission,
        nothing stored), or None. Asked once per spec generation, again after REJECTED_RECHECK_SECONDS while
        refused (a PriorityClass or ServiceAccount it names may be created meanwhile)."""
        meta = pdep["metadata"]
        mk = (str(meta.get("uid")), int(meta.get("generation") or 0))
        hit = self._rejections.get(mk)
        if hit is not None and (hit[0] is None or time.monotonic() - hit[1] < REJECTED_RECHECK_SECONDS):
            return hit[0]
        verdict: str | None = None
        try:
            await self.kube.create(pod, dry_run=True)
        except KubeError as exc:
            if exc.status == 0 or exc.status >= 500:
                raise  # no answer: the pass is retried
            if exc.status != 409:  # 409: the name is the running rank's, and only checked after validation
                verdict = f"{exc.status} {exc.reason}: {exc.message}"
        self._rejections[mk] = (verdict, time.monotonic())
        while len(self._rejections) > VERDICT_CACHE:
            self._rejections.pop(next(iter(self._rejections)))
        return verdict

    async def _act(self, key: Key, pdep: dict[str, Any], d: Decision, now: dt.datetime) -> None:
        """Deletes, then applies, then the status (gang state included), then the events. A new group
        generation that deletes pods is written first. When to write is chosen by writes.py.

        Failed writes do not stop the pass: the status is still written, so gang state such as the
        group generation is never lost and events are not repeated; the key is retried with backoff.
        """
        ns, name = key
        if d.restarted:
            self.metrics.group_restarts.labels(ns, name).inc()
        errors: list[str] = []
        if d.deletes_a_generation:
            # A gang restart or replacement is recorded before its first delete: an operator that dies in
            # between leaves the new group generation (and a restart counted once) for the next one to finish,
            # instead of deleted pods that look like failed ranks.
            pdep = await self._write_status(key, d.status)
        if d.delete:
            errors += await self._delete_all(key, d.delete, now)
        wait = settle_wait(self.cache.last_pod_gone.get(key), time.monotonic(), SETTLE_SECONDS)
        if wait > 0 and any(o["kind"] == "Pod" for o in d.apply):
            d = creates_put_off(d)
            self.queue.add_after(key, wait)
        if d.apply:
            errors += await self._write_all(key, d.apply)
        status = status_after_writes(d, errors)
        events = d.events
        held = self._pending.pop(key, None)
        if held is not None:
            events = held.events + events
        mono = time.monotonic()
        choice = choose_status_write(
            pdep.get("status"),
            status,
            held_since=held.since if held is not None else None,
            last_written=self._status_written.get(key),
            now=mono,
            progress_seconds=self.status_progress_seconds,
        )
        if choice.write is StatusWrite.HOLD_FIRST:
            self._pending[key] = PendingStatus(status, events, held.since if held is not None else mono)
            self.queue.add_after(key, choice.after)
            events = []
        elif choice.write is StatusWrite.LATER:
            self.queue.add_after(key, choice.after)
        elif choice.write is StatusWrite.NOW:
            await self._write_status(key, status)
        for ev in events:
            await self._event(pdep, ev.reason, ev.message, ev.warning, now)
        if errors:
            msg = errors[0] + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
            if self._apply_errors.get(key) != errors[0]:
                self._apply_errors[key] = errors[0]
                await self._event(pdep, "ApplyFailed", msg, True, now)
            raise RuntimeError(f"{len(errors)} writes failed: {msg}")
        self._apply_errors.pop(key, None)
        if d.became_ready:
            created = parse_iso(d.state.group_created_time)
            if created is not None:
                self.metrics.time_to_ready.observe(max(0.0, (now - created).total_seconds()))
        self.metrics.ranks_ready.labels(ns, name).set(d.state.ready_ranks or 0)
        self.metrics.ranks_total.labels(ns, name).set(d.state.total_ranks or 0)
        self.metrics.set_group_conditions(ns, name, d.state.conditions)

    async def _write_all(self, key: Key, objects: list[dict[str, Any]]) -> list[str]:
        """Create or apply every planned object (_apply_all), the answers into the cache; the refusals, as
        messages. Meanwhile the cache knows these writes are in flight (their echoes start no pass)."""
        errors: list[str] = []
        self.cache.creating(key, objects, True)
        try:
            applied = await self._apply_all(key, objects)
        finally:
            self.cache.creating(key, objects, False)
        for obj, res in zip(objects, applied, strict=True):
            if isinstance(res, KubeError):
                errors.append(f"{obj['kind']} {obj['metadata']['name']}: {res.message}")
            elif isinstance(res, BaseException):
                raise res
            else:
                self.cache.put_child(res, note=False)
        return errors

    async def _delete_all(self, key: Key, deletes: list[tuple[str, str, str]], now: dt.datetime) -> list[str]:
        """Send every delete at once (uid-preconditioned); the refusals, as messages."""
        errors: list[str] = []
        outcomes = await asyncio.gather(
            *(self.kube.delete(kind, key[0], n, uid) for kind, n, uid in deletes), return_exceptions=True
        )
        for (kind, n, uid), outcome in zip(deletes, outcomes, strict=True):
            self.metrics.api_writes.labels(f"delete/{kind}").inc()
            if isinstance(outcome, KubeError):
                errors.append(f"delete {kind} {n}: {outcome.message}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                self.cache.mark_deleting(kind, key, n, uid, iso(now))
        return errors

    async def _write_status(self, key: Key, status: dict[str, Any]) -> dict[str, Any]:
        updated = None
        self.cache.begin_status_write(key)
        try:
            updated = await self.kube.apply_status(key[0], key[1], status)
        finally:
            if self.cache.end_status_write(key, updated):
                self.queue.add(key)
        self._status_written[key] = time.monotonic()
        self.metrics.api_writes.labels("status").inc()
        self.cache.put_pdep(updated)
        return updated

    async def _apply_all(
        self, key: Key, objects: list[dict[str, Any]]
    ) -> list[dict[str, Any] | BaseException]:
        """_apply() every object, concurrently; each outcome is the answer or the exception.

        Each write is sent before the next is prepared: aiohttp sends a request from a task of its own, which
        on CPython 3.11 would first run once every request of a gather had been prepared, while the API server
        waited (docs/architecture.md, "Measured choices"). Two turns of the event loop let a write's request
        and its sending task run; past the client's concurrency writes wait for a slot anyway."""
        tasks: list[asyncio.Future[dict[str, Any]]] = []
        try:
            for i, obj in enumerate(objects):
                tasks.append(asyncio.ensure_future(self._apply(key, obj)))
                if i < self.kube.concurrency:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        outcomes: list[dict[str, Any] | BaseException] = await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes

    async def _apply(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        """Write one planned object.

        An object the cache does not have is created with a plain POST: server-side apply's merge buys
        nothing at creation and costs the API server more (docs/architecture.md, "Measured choices"). If the name is taken after all (the cache
        lagged), the object is server-side applied instead. Every later write is a server-side apply; a
        Service's first one is preceded by moving the fields its POST set into our apply entry
        (_adopt_fields), so that applies can remove what they no longer set (a port whose number changed).

        A Service another client broke so that our apply is invalid (say a port entry it owns now carries
        our port's name) gets its selector and ports set outright: the operator owns its Services, and
        server-side apply alone cannot remove another manager's list entries."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        cached = self.cache.children[kind].get(key, {}).get(name)
        if cached is None:
            try:
                created = await self.kube.create(obj)
                self.metrics.api_writes.labels(f"create/{kind}").inc()
                return created
            except KubeError as exc:
                self.metrics.api_writes.labels(f"create/{kind}").inc()
                if exc.status != 409:
                    raise
        if kind == "Service" and (cached is None or cached.get(UPDATE_OWNED)):
            await self._adopt_fields(obj)
        self.metrics.api_writes.labels(f"apply/{kind}").inc()
        try:
            return await self.kube.apply(obj)
        except KubeError as exc:
            if obj["kind"] != "Service" or exc.status != 422:
                raise
            self.metrics.api_writes.labels("patch/Service").inc()
            spec = obj["spec"]
            return await self.kube.merge_patch(
                obj, {"spec": {"ports": spec["ports"], "selector": spec["selector"]}}
            )

    async def _adopt_fields(self, obj: dict[str, Any]) -> None:
        """Move the fields our POST created into our server-side apply entry (fields.py), so that the apply
        that follows can also remove what it no longer sets. The resourceVersion test makes it a no-op
        against an object changed in between (the pass is retried)."""
        meta = obj["metadata"]
        full = await self.kube.get(obj["kind"], meta["namespace"], meta["name"])
        if full is None or not needs_upgrade(full["metadata"].get("managedFields"), self.kube.field_manager):
            return
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": full["metadata"]["resourceVersion"]},
            {
                "op": "replace",
                "path": "/metadata/managedFields",
                "value": upgraded(
                    full["metadata"]["managedFields"], self.kube.field_manager, iso(self.clock())
                ),
            },
        ]
        self.metrics.api_writes.labels(f"patch/{obj['kind']}").inc()
        self.cache.put_child(await self.kube.patch(obj, ops, "application/json-patch+json"), note=False)

    async def _event(
        self, pdep: dict[str, Any], reason: str, message: str, warning: bool, now: dt.datetime
    ) -> None:
        (log.warning if warning else log.info)(
            "%s/%s: %s: %s", pdep["metadata"]["namespace"], pdep["metadata"]["name"], reason, message
        )
        try:
            await self.kube.event(pdep, reason, message, warning=warning, now=iso(now))
            self.metrics.api_writes.labels("event").inc()
        except KubeError as exc:  # events are best effort
            log.debug("event %s not posted: %s", reason, exc)
