"""``wait_until``: the tests' one way to wait for something on the cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1) -> Any:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and return that; at
    least once, however short ``timeout``. Fails the test (AssertionError) with the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
