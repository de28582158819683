"""A de-duplicating work queue of keys, with delayed adds and per-key pacing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from wideep.kube.cache import Key


class WorkQueue:
    """Keys to reconcile. A key is never processed by two workers at once; a key added while it is
    being processed is processed again afterwards; delayed adds are coalesced."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._not_before: dict[Key, float] = {}  # loop time before which the key is not processed again
        self._urgent: set[Key] = set()  # dirty keys whose next pass is not paced

    def pace(self, key: Key, seconds: float) -> None:
        """Hold further processing of key for seconds (adds meanwhile are deferred, not lost)."""
        if seconds > 0:
            self._not_before[key] = asyncio.get_running_loop().time() + seconds
        else:
            self._not_before.pop(key, None)

    def add(self, key: Key, *, urgent: bool = False) -> None:
        """Process key (once, however often it is added meanwhile). ``urgent``: not held by pacing; for the
        event that completes a group (its last pod Ready), whose pass writes Ready=True."""
        if urgent:
            self._not_before.pop(key, None)
        if key in self._active:
            self._dirty.add(key)
            if urgent:
                self._urgent.add(key)
            return
        not_before = self._not_before.get(key)
        if not_before is not None:
            wait = not_before - asyncio.get_running_loop().time()
            if wait > 0:
                self.add_after(key, wait)
                return
            del self._not_before[key]
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        handle = self._timers.get(key)
        when = loop.time() + delay
        if handle is not None and not handle.cancelled() and handle.when() <= when:
            return
        if handle is not None:
            handle.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def depth(self) -> int:
        return self._queue.qsize()

    def start(self, workers: int, process: Callable[[Key], Awaitable[None]]) -> None:
        for i in range(workers):
            self._tasks.append(asyncio.create_task(self._worker(process), name=f"wideep-worker-{i}"))

    async def _worker(self, process: Callable[[Key], Awaitable[None]]) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await process(key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    urgent = key in self._urgent
                    self._urgent.discard(key)
                    self.add(key, urgent=urgent)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for h in self._timers.values():
            h.cancel()
        self._tasks.clear()
