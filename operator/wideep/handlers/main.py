"""kopf registrations: thin adapters from watch events to the cache and the work queue.

Only event-watching handlers are registered, so kopf writes nothing to the objects: no
finalizers (deletion never waits for the operator), no last-handled-configuration annotation
(GitOps tools see no drift), no progress annotations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import Any

import kopf
from prometheus_client import start_http_server

from wideep.api import constants as c
from wideep.reconcile.kube import Credentials, KubeClient, load_credentials
from wideep.reconcile.metrics import Metrics
from wideep.reconcile.reconciler import Reconciler
from wideep.reconcile.state import Cache, WorkQueue

log = logging.getLogger("wideep.operator")

WORKERS = 16
CONCURRENCY = 64


@dataclasses.dataclass
class Runtime:
    creds: Credentials
    metrics: Metrics
    cache: Cache = dataclasses.field(default_factory=Cache)
    queue: WorkQueue | None = None
    kube: KubeClient | None = None
    reconciler: Reconciler | None = None
    workers: int = WORKERS
    concurrency: int = CONCURRENCY
    resync_seconds: float = 60.0
    namespaces: tuple[str, ...] = ()


async def prime_cache(rt: Runtime) -> None:
    """List what exists before the first reconcile, so a pod not yet seen by a watch is never taken
    for a deleted one (which would restart a healthy group when the operator restarts)."""
    assert rt.kube is not None
    selector = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE}"
    scopes: list[str | None] = list(rt.namespaces) or [None]
    for ns in scopes:
        for kind in ("Pod", "Service"):
            for obj in await rt.kube.list(kind, ns, selector):
                rt.cache.put_child(obj)
        for obj in await rt.kube.list(c.KIND, ns):
            rt.cache.put_pdep(obj)
    log.info(
        "cache primed: %d ParallelDeployments, %d pods",
        len(rt.cache.pdeps),
        sum(len(v) for v in rt.cache.children["Pod"].values()),
    )


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    selector = {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        cr = rt.creds
        return kopf.ConnectionInfo(
            server=cr.server,
            ca_path=cr.ca_path,
            insecure=cr.insecure or None,
            token=cr.bearer(),
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
        rt.kube = KubeClient(rt.creds, concurrency=rt.concurrency)
        await prime_cache(rt)
        rt.queue = WorkQueue()
        rt.reconciler = Reconciler(rt.kube, rt.cache, rt.queue, rt.metrics, resync_seconds=rt.resync_seconds)
        rt.queue.start(rt.workers, rt.reconciler.process)
        log.info("wideep operator started: %d workers, %d concurrent API calls", rt.workers, rt.concurrency)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if rt.queue is not None:
            await rt.queue.stop()
        if rt.kube is not None:
            await rt.kube.close()
        log.info("wideep operator stopped")

    @kopf.on.probe(id="queue", registry=registry)
    def probe(**_: Any) -> dict[str, int]:
        return {"queued": rt.queue.depth() if rt.queue else 0, "deployments": len(rt.cache.pdeps)}

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, registry=registry)
    def on_pdep(event: kopf.RawEvent, **_: Any) -> None:
        obj: dict[str, Any] = dict(event["object"])
        if event.get("type") == "DELETED":
            rt.cache.delete_pdep(obj)
            return
        key = rt.cache.put_pdep(obj)
        if rt.queue is not None:
            rt.queue.add(key)

    def on_child(event: kopf.RawEvent, kind: str) -> None:
        obj = dict(event["object"])
        obj.setdefault("kind", kind)
        key = rt.cache.delete_child(obj) if event.get("type") == "DELETED" else rt.cache.put_child(obj)
        if key is not None and rt.queue is not None and key in rt.cache.pdeps:
            rt.queue.add(key)

    @kopf.on.event("", "v1", "pods", labels=selector, registry=registry)
    def on_pod(event: kopf.RawEvent, **_: Any) -> None:
        on_child(event, "Pod")

    @kopf.on.event("", "v1", "services", labels=selector, registry=registry)
    def on_service(event: kopf.RawEvent, **_: Any) -> None:
        on_child(event, "Service")

    return registry


def run_operator(
    *,
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    standalone: bool = True,
    peering: str | None = None,
    liveness_port: int = 8080,
    metrics_port: int = 9090,
    log_format: str = "json",
    verbose: bool = False,
    bind_address: str = "0.0.0.0",
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
    runtime: Runtime | None = None,
    resync_seconds: float = 60.0,
    workers: int = WORKERS,
    concurrency: int = CONCURRENCY,
) -> int:
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    )
    for noisy in ("kopf.objects", "kopf.activities.probe"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.DEBUG)
    rt = runtime or Runtime(
        creds=load_credentials(),
        metrics=Metrics(),
        workers=workers,
        concurrency=concurrency,
        resync_seconds=resync_seconds,
        namespaces=tuple(namespaces),
    )
    if metrics_port:
        start_http_server(metrics_port, addr=bind_address, registry=rt.metrics.registry)
    registry = build_registry(rt)
    kopf.run(
        registry=registry,
        standalone=peering is None and standalone,
        peering_name=peering,
        namespaces=list(namespaces),
        clusterwide=all_namespaces or not namespaces,
        liveness_endpoint=f"http://{bind_address}:{liveness_port}/healthz" if liveness_port else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
    return 0
