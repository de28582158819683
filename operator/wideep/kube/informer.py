"""List-then-watch of the operator's children (pods, Services), with a server-side label selector.

kopf watches the ParallelDeployments; the children, which are many (1024 pods for
one DP=1024 group), are watched here: one JSON decode and a cache update per event, and only the
objects labelled as managed by wideep are sent by the API server at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from wideep.api import constants as c
from wideep.kube.cache import Cache, Key
from wideep.kube.client import KubeClient, KubeError

log = logging.getLogger("wideep.informer")

SELECTOR = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE}"


class Informer:
    def __init__(
        self,
        kube: KubeClient,
        cache: Cache,
        kind: str,
        namespace: str | None,
        notify: Callable[[Key], None],
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.kind = kind
        self.namespace = namespace
        self.notify = notify
        self.resource_version = ""
        self.synced = asyncio.Event()

    async def relist(self) -> None:
        items, rv = await self.kube.list_with_version(self.kind, self.namespace, SELECTOR)
        for key in self.cache.replace_children(self.kind, self.namespace, items):
            self.notify(key)
        self.resource_version = rv
        self.synced.set()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                if not self.resource_version:
                    await self.relist()
                async for ev in self.kube.watch(self.kind, self.namespace, self.resource_version, SELECTOR):
                    typ = ev.get("type")
                    obj = ev.get("object") or {}
                    if typ == "ERROR":
                        if obj.get("code") == 410:  # resourceVersion too old: list again
                            self.resource_version = ""
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if typ == "BOOKMARK":
                        continue
                    obj.setdefault("kind", self.kind)
                    labels = (obj.get("metadata") or {}).get("labels") or {}
                    if typ == "DELETED" and labels.get(c.LABEL_MANAGED_BY) != c.MANAGED_BY_VALUE:
                        # Someone removed our label: the object left the selector but still exists.
                        # Keep it (the reconciler puts the label back); taking it for deleted would
                        # restart a healthy group.
                        typ = "MODIFIED"
                    if typ == "DELETED":
                        gone = self.cache.delete_child(obj)
                        concerned = [] if gone is None else [gone]
                    else:
                        concerned = self.cache.put_child(obj)
                    for key in concerned:
                        self.notify(key)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except (TimeoutError, KubeError, OSError, ValueError) as exc:
                if isinstance(exc, KubeError) and exc.status == 410:
                    self.resource_version = ""
                log.warning(
                    "watch of %s %s interrupted (%s); resuming in %.1fs",
                    self.kind,
                    self.namespace or "(all namespaces)",
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:  # aiohttp payload errors and the like: never let the watch die
                log.warning("watch of %s failed (%r); relisting in %.1fs", self.kind, exc, backoff)
                self.resource_version = ""
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
