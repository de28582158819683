"""kopf registrations: thin adapters from watch events to the cache and the work queue.

Only event-watching handlers are registered, so kopf writes nothing to the objects: no
finalizers (deletion never waits for the operator), no last-handled-configuration annotation
(GitOps tools see no drift), no progress annotations.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import threading
from collections.abc import Sequence
from typing import Any, cast

import kopf
from prometheus_client import start_http_server

from wideep import defaults
from wideep.api import constants as c
from wideep.kube.cache import Cache, Key
from wideep.kube.client import KubeClient
from wideep.kube.informer import Informer
from wideep.kube.kubeconfig import Credentials, load_credentials
from wideep.kube.leader import LeaderElector
from wideep.kube.workqueue import WorkQueue
from wideep.reconcile.metrics import Metrics
from wideep.reconcile.pods import CLASSIFIER
from wideep.reconcile.reconciler import Reconciler
from wideep.reconcile.warmup import warm_up

log = logging.getLogger("wideep.operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf keeps one for its change-detecting handlers (on.create/update/resume/delete) and
    their per-field diffs; wideep registers event handlers only, which never see a diff (handlers_have_no_diff
    in the tests). kopf's default builds one for every watch event anyway, from two deep copies of the whole
    object, status included: a large share of the time from an event to on_pdep (docs/architecture.md)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class LeaderConfig:
    """Leader election: the Lease ``namespace/name``, this replica's ``identity`` in it, and the Lease's
    duration (the renew deadline and retry period are shares of it: leader.py)."""

    namespace: str
    name: str
    identity: str
    lease_seconds: float = defaults.LEASE_SECONDS


@dataclasses.dataclass
class Runtime:
    creds: Credentials
    metrics: Metrics
    cache: Cache = dataclasses.field(default_factory=lambda: Cache(CLASSIFIER))
    queue: WorkQueue | None = None
    kube: KubeClient | None = None
    reconciler: Reconciler | None = None
    workers: int = defaults.WORKERS
    concurrency: int = defaults.CONCURRENCY
    resync_seconds: float = defaults.RESYNC_SECONDS
    status_progress_seconds: float = defaults.STATUS_PROGRESS_SECONDS
    warm_connections: int = defaults.CONCURRENCY
    namespaces: tuple[str, ...] = ()
    informers: list[Informer] = dataclasses.field(default_factory=list)
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    leader_election: LeaderConfig | None = None  # None: this process acts from the start
    leader: LeaderElector | None = None
    # kopf's stop flag, set when the Lease is lost. An asyncio.Event: kopf waits for a threading.Event in an
    # executor thread.
    stop: threading.Event | asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    lost_leadership: bool = False


async def start_informers(rt: Runtime) -> None:
    """List pods and Services (and ParallelDeployments) before the first reconcile, then watch from there:
    a pod not yet seen is never taken for a deleted one (that would restart a healthy group whenever the
    operator restarts)."""
    assert rt.kube is not None and rt.queue is not None
    queue = rt.queue

    def notify(key: Key) -> None:
        urgent = rt.cache.pop_completed(key)  # this event made the group's last pod Ready: no pacing
        changed = rt.cache.pop_changed(key)
        if key not in rt.cache.pdeps:
            return
        if urgent or changed:
            queue.add(key, urgent=urgent)
        else:
            # Progress only (a pod bound, Running, Ready while its group comes up): nothing to write but
            # progress figures, which are written at most every status_progress_seconds anyway. One pass
            # then takes in every such event meanwhile, instead of a pass per few events (a 256-rank group
            # coming up made ~50 passes of O(N) each, CPU the API server, scheduler and kubelets lacked).
            queue.add_after(key, rt.status_progress_seconds)

    scopes: list[str | None] = list(rt.namespaces) or [None]
    for ns in scopes:
        for obj in await rt.kube.list_objects(c.KIND, ns):
            rt.cache.put_pdep(obj)
        for kind in ("Pod", "Service"):
            inf = Informer(rt.kube, rt.cache, kind, ns, notify)
            await inf.relist()
            rt.informers.append(inf)
    rt.cache.started()
    for key in rt.cache.pdeps:  # kopf's first events of these are echoes of this list and are skipped
        queue.add(key)
    for inf in rt.informers:
        rt.tasks.append(asyncio.create_task(inf.run(), name=f"wideep-watch-{inf.kind}-{inf.namespace}"))
    log.info(
        "cache primed: %d ParallelDeployments, %d pods",
        len(rt.cache.pdeps),
        sum(len(v) for v in rt.cache.children["Pod"].values()),
    )


async def start_runtime(rt: Runtime) -> None:
    """Connections, informers, reconciler and workers: from here on this process acts on the cluster."""
    assert rt.kube is not None
    rt.queue = WorkQueue()
    if rt.warm_connections:
        # Writes come in bursts (a group created or restarted): their connections are open beforehand.
        await rt.kube.warm(rt.warm_connections)
        rt.tasks.append(asyncio.create_task(rt.kube.keep_warm(rt.warm_connections), name="wideep-keep-warm"))
    await start_informers(rt)
    rt.reconciler = Reconciler(
        rt.kube,
        rt.cache,
        rt.queue,
        rt.metrics,
        resync_seconds=rt.resync_seconds,
        status_progress_seconds=rt.status_progress_seconds,
    )
    warmed = warm_up()  # the first group's pass runs warm code, like its writes run on warm connections
    log.debug("warmed up the pass pipeline in %.1f ms", warmed.seconds * 1000)
    # What start-up made (modules, schemas, the primed cache) lives as long as the process: moved out of the
    # collector's reach, full collections do not walk it and pause the passes less.
    gc.collect()
    gc.freeze()
    rt.queue.start(rt.workers, rt.reconciler.process)
    log.info("wideep operator started: %d workers, %d concurrent API calls", rt.workers, rt.concurrency)


async def lead(rt: Runtime) -> None:
    """Wait for the Lease, act while holding it; once it is lost, stop acting at once and stop the process
    (its Deployment starts it again, as a standby)."""
    assert rt.leader is not None
    try:
        await rt.leader.acquire()
        await start_runtime(rt)
        await rt.leader.hold()
    except Exception:
        log.exception("leader election failed: stopping")
    if rt.queue is not None:
        await rt.queue.stop()  # no pass may start, or finish its writes, once another replica may lead
    for task in rt.tasks:
        if task is not asyncio.current_task():
            task.cancel()
    rt.lost_leadership = True
    rt.stop.set()


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # kopf logs in again once ``expiration`` (an exec plugin's token's) has passed.
        cr = rt.creds
        return kopf.ConnectionInfo(
            server=cr.server,
            ca_path=cr.ca_path,
            ca_data=cr.ca_data,
            insecure=cr.insecure or None,
            token=await cr.bearer_async(),
            expiration=cr.expiry,
            certificate_path=cr.cert_path,
            private_key_path=cr.key_path,
            default_namespace=cr.namespace,
        )

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events only: no event per handler log line
        settings.scanning.disabled = True  # no CRD watching: least privilege
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 60
        settings.batching.worker_limit = None
        settings.persistence.diffbase_storage = NoDiffBase()
        rt.kube = KubeClient(
            rt.creds, concurrency=rt.concurrency, on_connection=rt.metrics.api_connections.inc
        )
        if rt.leader_election is None:
            await start_runtime(rt)
            return
        lc = rt.leader_election
        rt.leader = LeaderElector(
            rt.kube,
            lc.namespace,
            lc.name,
            lc.identity,
            lease_seconds=lc.lease_seconds,
        )
        # A standby replica is live (kopf, /healthz, its cache of ParallelDeployments) but acts only once it
        # holds the Lease; it is started in the background so that kopf finishes starting meanwhile.
        rt.tasks.append(asyncio.create_task(lead(rt), name="wideep-leader-election"))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in rt.tasks:
            task.cancel()
        for task in rt.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if rt.queue is not None:
            await rt.queue.stop()
        if rt.leader is not None:
            await rt.leader.release()  # after the last pass: the next leader starts at once
        if rt.kube is not None:
            await rt.kube.close()
        # kopf waits for its stop flag in a task it does not cancel when a signal stops it, then gives such
        # tasks 5 s: raising the flag now lets the process exit at once.
        rt.stop.set()
        log.info("wideep operator stopped")

    @kopf.on.probe(id="queue", registry=registry)
    def probe(**_: Any) -> dict[str, int]:
        return {"queued": rt.queue.depth() if rt.queue else 0, "deployments": len(rt.cache.pdeps)}

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, registry=registry)
    async def on_pdep(event: kopf.RawEvent, **_: Any) -> None:
        # async: kopf runs sync handlers in a thread pool, a hop that delayed the first write by milliseconds.
        obj: dict[str, Any] = dict(event["object"])
        if event.get("type") == "DELETED":
            rt.cache.delete_pdep(obj)
            return
        meta = obj.get("metadata") or {}
        cached = rt.cache.pdeps.get((meta.get("namespace", ""), meta.get("name", "")))
        if cached is not None and cached["metadata"].get("resourceVersion") == meta.get("resourceVersion"):
            return  # the echo of our own status write: the cache already holds it
        key = rt.cache.put_pdep(obj)
        if rt.queue is not None and not rt.cache.held_pdep_event(key, obj):
            rt.queue.add(key)

    return registry


def run_operator(
    *,
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    leader_election: LeaderConfig | None = None,
    liveness_port: int = defaults.LIVENESS_PORT,
    metrics_port: int = defaults.METRICS_PORT,
    log_format: str = "json",
    verbose: bool = False,
    bind_address: str = "0.0.0.0",
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
    runtime: Runtime | None = None,
    resync_seconds: float = defaults.RESYNC_SECONDS,
    status_progress_seconds: float = defaults.STATUS_PROGRESS_SECONDS,
    workers: int = defaults.WORKERS,
    concurrency: int = defaults.CONCURRENCY,
    warm_connections: int = defaults.CONCURRENCY,
    context: str | None = None,
) -> int:
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    )
    for noisy in ("kopf.objects", "kopf.activities.probe"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.DEBUG)
    creds = runtime.creds if runtime is not None else load_credentials(context)
    if leader_election is not None and not leader_election.namespace:
        leader_election = dataclasses.replace(leader_election, namespace=creds.namespace or "default")
    rt = runtime or Runtime(
        creds=creds,
        metrics=Metrics(),
        workers=workers,
        concurrency=concurrency,
        warm_connections=warm_connections,
        resync_seconds=resync_seconds,
        status_progress_seconds=status_progress_seconds,
        namespaces=tuple(namespaces),
        leader_election=leader_election,
    )
    if stop_flag is not None:
        rt.stop = stop_flag
    if metrics_port:
        start_http_server(metrics_port, addr=bind_address, registry=rt.metrics.registry)
    registry = build_registry(rt)
    kopf.run(
        registry=registry,
        standalone=True,  # no kopf peering: replicas elect a leader with a Lease (reconcile/leader.py)
        namespaces=list(namespaces),
        clusterwide=all_namespaces or not namespaces,
        liveness_endpoint=f"http://{bind_address}:{liveness_port}/healthz" if liveness_port else None,
        stop_flag=rt.stop,
        ready_flag=ready_flag,
    )
    return 1 if rt.lost_leadership else 0
