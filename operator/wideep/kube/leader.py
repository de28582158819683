"""Leader election on a coordination.k8s.io/v1 Lease: with several operator replicas, one reconciles.

The replica holding the Lease runs the informers, the work queue and the reconciler; the others wait,
trying to take it every ``retry_seconds``. The holder renews it as often. A Lease whose record has not
changed for ``lease_seconds`` (measured on the local clock from the moment this replica saw it change, as
client-go does, so clocks of different nodes need not agree) is taken over. A holder that cannot renew
for ``renew_deadline_seconds`` (< ``lease_seconds``) gives up and stops before anyone may take over, so two
replicas never reconcile at once. A holder that stops cleanly releases the Lease at once.

Every write is a PUT carrying the resourceVersion that was read: two replicas racing for the Lease cannot
both win (the loser gets 409 Conflict).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from wideep import defaults
from wideep.kube.client import KubeClient, KubeError

log = logging.getLogger("wideep.leader")

RENEW_DEADLINE_SHARE = 2 / 3  # of the Lease duration: 10 s of 15 s
RETRY_SHARE = 2 / 15  # of the Lease duration: 2 s of 15 s


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return base if name is None else f"{base}/{name}"


def micro_time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_seconds: float = defaults.LEASE_SECONDS,
        renew_deadline_seconds: float | None = None,
        retry_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """The renew deadline and retry period default to their shares of ``lease_seconds``."""
        if renew_deadline_seconds is None:
            renew_deadline_seconds = lease_seconds * RENEW_DEADLINE_SHARE
        if retry_seconds is None:
            retry_seconds = lease_seconds * RETRY_SHARE
        if not 0 < retry_seconds < renew_deadline_seconds < lease_seconds:
            raise ValueError("leader election needs 0 < retry < renew deadline < lease duration")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._seen: tuple[str, float] | None = None  # (resourceVersion, local time it was first seen)
        self.leading = False

    def _spec(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = micro_time(dt.datetime.now(dt.UTC))
        prev = previous or {}
        ours = prev.get("holderIdentity") == self.identity
        transitions = int(prev.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_seconds)),
            "acquireTime": prev.get("acquireTime") if ours and prev.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours or previous is None else transitions + 1,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        path = lease_path(self.namespace, self.name)
        try:
            lease: dict[str, Any] = await self.kube.request("GET", path, retries=0, unlimited=True)
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            try:
                await self.kube.request(
                    "POST", lease_path(self.namespace), body=body, retries=0, unlimited=True
                )
            except KubeError as exc2:
                if exc2.status == 409:
                    return False  # another replica created it first
                raise
            return True
        meta, spec = lease["metadata"], lease.get("spec") or {}
        rv = str(meta.get("resourceVersion"))
        now = self.clock()
        if self._seen is None or self._seen[0] != rv:
            self._seen = (rv, now)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
            if now - self._seen[1] < duration:
                return False  # held, and renewed within its duration as far as we can tell
            log.info("the Lease %s/%s of %s expired: taking it over", self.namespace, self.name, holder)
        updated = {**lease, "spec": {**spec, **self._spec(spec)}}
        try:
            await self.kube.request("PUT", path, body=updated, retries=0, unlimited=True)
        except KubeError as exc:
            if exc.status == 409:
                return False  # someone else wrote it since our read
            raise
        return True

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        waiting_logged = False
        while True:
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), timeout=self.lease_seconds):
                    self.leading = True
                    log.info(
                        "leading: holding the Lease %s/%s as %s", self.namespace, self.name, self.identity
                    )
                    return
            except (KubeError, TimeoutError) as exc:
                log.warning("leader election: %s", exc or "no answer")
            if not waiting_logged:
                log.info("waiting for the Lease %s/%s (another replica leads)", self.namespace, self.name)
                waiting_logged = True
            await asyncio.sleep(self.retry_seconds)

    async def hold(self) -> None:
        """Renew the Lease every retry_seconds; return when it is lost (held by another replica, or not renewed
        for renew_deadline_seconds), after which this replica must stop acting at once."""
        last = self.clock()
        while True:
            await asyncio.sleep(self.retry_seconds)
            # A renewal that hangs must not outlive the deadline: the standbys count the Lease's duration.
            remaining = max(0.001, self.renew_deadline_seconds - (self.clock() - last))
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), timeout=remaining):
                    last = self.clock()
                    continue
                log.error("lost the Lease %s/%s: another replica holds it", self.namespace, self.name)
            except (KubeError, TimeoutError) as exc:
                if self.clock() - last < self.renew_deadline_seconds:
                    log.warning("could not renew the Lease (%s); retrying", exc)
                    continue
                log.error(
                    "could not renew the Lease %s/%s for %.0fs: giving it up",
                    self.namespace,
                    self.name,
                    self.renew_deadline_seconds,
                )
            self.leading = False
            return

    async def release(self) -> None:
        """Let another replica take over at once (a clean stop): empty the holder if it is still us."""
        if not self.leading:
            return
        self.leading = False
        path = lease_path(self.namespace, self.name)
        try:
            lease: dict[str, Any] = await self.kube.request("GET", path, retries=0, unlimited=True)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
            await self.kube.request("PUT", path, body={**lease, "spec": spec}, retries=0, unlimited=True)
            log.info("released the Lease %s/%s", self.namespace, self.name)
        except KubeError as exc:
            log.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, exc)
