"""A small async Kubernetes REST client: server-side apply, delete, list, status, events.

The reconciler's calls go through here, over one pooled aiohttp session (watches over a second one), so
concurrency is bounded in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from wideep import defaults
from wideep.api import constants as c
from wideep.kube.kubeconfig import Credentials


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


# --------------------------------------------------------------------------------------- paths

_CORE = {"Pod": "pods", "Service": "services", "Event": "events"}


def resource_path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    if kind == c.KIND:
        base = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}"
    else:
        base = f"/api/v1/namespaces/{namespace}/{_CORE[kind]}"
    if name is not None:
        base += "/" + quote(name)
    if subresource:
        base += "/" + subresource
    return base


KEEPALIVE_SECONDS = 75.0  # under the API server's 90 s idle timeout: we close first, never mid-request
WARM_INTERVAL_SECONDS = 30.0


class KubeClient:
    """One session, bounded concurrency."""

    def __init__(
        self,
        creds: Credentials,
        concurrency: int = defaults.CONCURRENCY,
        field_manager: str = c.FIELD_MANAGER,
        on_connection: Callable[[], object] | None = None,
    ) -> None:
        self.creds = creds
        self.field_manager = field_manager
        self._sem = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self.connections_opened = 0  # TCP+TLS connections made (each a handshake)
        self._on_connection = on_connection

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        """The pool of API calls: at most ``concurrency`` requests use it at once (the semaphore), so the
        connections warm() opens are always enough."""
        if self._session is None or self._session.closed:
            self._session = self._new_session(limit=self._concurrency)
        return self._session

    def _get_watch_session(self) -> aiohttp.ClientSession:
        """Watch streams get connections of their own: each holds one for minutes (two per watched namespace).
        In the API calls' pool they would take warmed connections away from a burst of writes, and under a
        shared connection limit the watches of many namespaces took every connection and stalled all calls."""
        if self._watch_session is None or self._watch_session.closed:
            self._watch_session = self._new_session(limit=0)
        return self._watch_session

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        conn = aiohttp.TCPConnector(
            ssl=self.creds.ssl_context(), limit=limit, keepalive_timeout=KEEPALIVE_SECONDS
        )
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(self._connection_opened)
        return aiohttp.ClientSession(
            connector=conn, timeout=aiohttp.ClientTimeout(total=60, connect=10), trace_configs=[trace]
        )

    @property
    def concurrency(self) -> int:
        """Requests in flight at most (the pool's connections)."""
        return self._concurrency

    async def _connection_opened(self, *_: Any) -> None:
        self.connections_opened += 1
        if self._on_connection is not None:
            self._on_connection()

    async def warm(self, connections: int) -> int:
        """Use ``connections`` pooled connections at once, so that they are open (or stay open) for the next
        burst of writes. HTTP/1.1 needs one connection per request in flight, and each new one is a TLS
        handshake, which would otherwise be paid right when a group is created or restarted. Returns how many
        succeeded."""
        n = min(connections, self._concurrency)
        done = await asyncio.gather(
            *(self.request("GET", "/version", retries=0) for _ in range(n)), return_exceptions=True
        )
        return sum(not isinstance(r, BaseException) for r in done)

    async def keep_warm(self, connections: int, interval: float = WARM_INTERVAL_SECONDS) -> None:
        """Keep ``connections`` connections open for good: the API server closes a connection idle for 90 s
        (k8s.io/apiserver pkg/server/secure_serving.go, IdleTimeout), aiohttp after KEEPALIVE_SECONDS."""
        while True:
            await self.warm(connections)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()
        self._session = self._watch_session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        retries: int = 4,
        unlimited: bool = False,
    ) -> Any:
        """``unlimited``: not behind the writes' concurrency limit and connection pool (the Lease's renewals,
        which must not wait for a burst of a thousand pod creates to drain)."""
        url = self.creds.server + path
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)  # several times faster than json for pod-sized bodies
        delay = 0.2
        refreshed = False
        for attempt in range(retries + 1):
            token = await self.creds.bearer_async()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                async with self._sem if not unlimited else contextlib.nullcontext():
                    session = self._get_watch_session() if unlimited else self._get_session()
                    async with session.request(method, url, data=data, headers=headers) as resp:
                        raw = await resp.read()
                        if resp.status < 400:
                            return orjson.loads(raw) if raw else {}
                        text = raw.decode("utf-8", errors="replace")
                        try:
                            status_body = orjson.loads(raw)
                        except ValueError:
                            status_body = {"message": text}
                        err = KubeError(
                            resp.status,
                            str(status_body.get("reason", resp.reason)),
                            str(status_body.get("message", text)),
                            status_body,
                        )
                        if resp.status == 401 and self.creds.refreshable and not refreshed:
                            # an exec plugin's token the API server no longer takes: ask the plugin anew, once
                            refreshed = True
                            await self.creds.bearer_async(refresh=True)
                            continue
                        if resp.status in (429, 500, 502, 503, 504) and attempt < retries:
                            retry_after = resp.headers.get("Retry-After")
                            await asyncio.sleep(float(retry_after) if retry_after else delay)
                            delay = min(delay * 2, 5.0)
                            continue
                        raise err
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if attempt >= retries:
                    raise KubeError(0, "ConnectionError", str(exc) or type(exc).__name__) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    # ---- verbs

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply under the operator's field manager."""
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta["namespace"], meta["name"])
        params = {"fieldManager": self.field_manager, "force": "true" if force else "false"}
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params=params,
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def create(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """POST under the operator's field manager (a KubeError 409 when the name is taken). ``dry_run``:
        validation and admission only, nothing stored."""
        meta = obj["metadata"]
        params = {"fieldManager": self.field_manager}
        if dry_run:
            params["dryRun"] = "All"
        result: dict[str, Any] = await self.request(
            "POST",
            resource_path(obj["kind"], meta["namespace"]),
            params=params,
            body=obj,
        )
        return result

    async def merge_patch(self, obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        return await self.patch(obj, body, "application/merge-patch+json")

    async def patch(self, obj: dict[str, Any], body: Any, content_type: str) -> dict[str, Any]:
        """PATCH of any type under the operator's field manager (a JSON patch: ``body`` is the op list)."""
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta["namespace"], meta["name"])
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": self.field_manager},
            body=body,
            content_type=content_type,
        )
        return result

    async def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        path = resource_path(c.KIND, namespace, name, "status")
        params = {"fieldManager": self.field_manager, "force": "true"}
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params=params,
            body=body,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete; returns False when it was already gone (or replaced: the uid precondition failed)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", resource_path(kind, namespace, name), body=body)
        except KubeError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.request("GET", resource_path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list_objects(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """List in one namespace, or in all of them when namespace is None; items get their kind set."""
        items, _ = await self.list_with_version(kind, namespace, label_selector)
        return items

    async def list_with_version(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """A list and its resourceVersion, to start a watch from (the informer pattern)."""
        params = {"labelSelector": label_selector} if label_selector else None
        path = resource_path(kind, namespace or "_")
        if namespace is None:
            path = path.replace("/namespaces/_", "")
        result = await self.request("GET", path, params=params)
        items: list[dict[str, Any]] = result.get("items", [])
        for item in items:
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", c.API_VERSION if kind == c.KIND else "v1")
        return items, str(result.get("metadata", {}).get("resourceVersion", ""))

    async def watch(
        self, kind: str, namespace: str | None, resource_version: str, label_selector: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events (with bookmarks) from resource_version until the server closes the stream."""
        path = resource_path(kind, namespace or "_")
        if namespace is None:
            path = path.replace("/namespaces/_", "")
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "290",
        }
        if label_selector:
            params["labelSelector"] = label_selector
        url = self.creds.server + path + "?" + urlencode(params)
        headers = {"Accept": "application/json"}
        token = await self.creds.bearer_async()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=330)
        async with self._get_watch_session().get(url, headers=headers, timeout=timeout) as resp:
            if resp.status >= 400:
                text = await resp.text()
                if resp.status == 401 and self.creds.refreshable:
                    await self.creds.bearer_async(refresh=True)  # the informer's next watch gets the new one
                raise KubeError(resp.status, resp.reason or "", text[:500])
            async for line in resp.content:
                if line.strip():
                    yield orjson.loads(line)

    async def event(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        now: str,
    ) -> None:
        meta = involved["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", c.API_VERSION),
                "kind": involved.get("kind", c.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "wideep-operator"},
            "reportingComponent": "wideep.dev/operator",
            "reportingInstance": os.environ.get("HOSTNAME", "wideep-operator"),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", resource_path("Event", meta["namespace"]), body=body)
