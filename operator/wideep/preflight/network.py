"""Socket-level steps of the preflight: interfaces, name resolution, reachability, port checks. No torch."""

from __future__ import annotations

import errno
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Log:
    """Plain, thread-safe log lines on stderr: ``wideep-preflight +1.234s rank 3/8: message``."""

    def __init__(self, start: float, sink: Callable[[str], None] | None = None) -> None:
        self.start = start
        self._lock = threading.Lock()
        self._sink = sink or _stderr

    def __call__(self, who: str, message: str) -> None:
        line = f"wideep-preflight +{time.monotonic() - self.start:.3f}s {who}: {message}"
        with self._lock:
            self._sink(line)


def _stderr(line: str) -> None:
    os.write(2, (line + "\n").encode(errors="replace"))


@dataclass
class Deadline:
    """The whole preflight's budget, counted from the process's start."""

    start: float
    seconds: float

    @property
    def at(self) -> float:
        return self.start + self.seconds

    def remaining(self, reserve: float = 0.0) -> float:
        return max(0.0, self.at - reserve - time.monotonic())

    def expired(self, reserve: float = 0.0) -> bool:
        return self.remaining(reserve) <= 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start


@dataclass
class Backoff:
    """Exponential backoff with jitter: 0.1 s, 0.2 s, ... up to ``cap``, never past the deadline."""

    initial: float = 0.1
    cap: float = 2.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False)

    def sleep(self, deadline: Deadline) -> None:
        delay = self._next or self.initial
        self._next = min(self.cap, delay * self.factor)
        time.sleep(min(delay * random.uniform(0.8, 1.2), deadline.remaining()))


class Throttle:
    """True at most once per ``interval`` seconds (the first call is always True)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -float("inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False


def check_interfaces(value: str | None) -> str | None:
    """None when every interface of GLOO_SOCKET_IFNAME (comma-separated) exists here, else why not."""
    if not value:
        return None
    try:
        present = sorted(name for _, name in socket.if_nameindex())
    except OSError:
        return None
    missing = [name for name in value.split(",") if name.strip() and name.strip() not in present]
    if not missing:
        return None
    return (
        f"GLOO_SOCKET_IFNAME={value!r}: no interface {', '.join(missing)} in this pod "
        f"(interfaces here: {', '.join(present) or 'none'}); set spec.network.socketInterface to one of them"
    )


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (raises OSError when it does not)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def wait_resolvable(
    host: str, port: int, deadline: Deadline, log: Log, who: str, interval: float
) -> list[str]:
    """Resolve ``host``, retrying with backoff until the deadline; raise TimeoutError naming the last error."""
    backoff = Backoff()
    throttle = Throttle(interval)
    last = ""
    while True:
        try:
            addrs = resolve(host, port)
        except OSError as exc:
            last = exc.strerror or str(exc)
        else:
            log(who, f"master {host} resolves to {', '.join(addrs)}")
            return addrs
        if deadline.expired():
            raise TimeoutError(
                f"master {host} did not become resolvable within {deadline.seconds:g}s ({last})"
            )
        if throttle():
            log(who, f"waiting for master {host} to be resolvable ({last}); {deadline.elapsed():.1f}s so far")
        backoff.sleep(deadline)


def probe(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens (closed at once), else the reason it did not."""
    try:
        with socket.create_connection((host, port), timeout=max(0.05, timeout)):
            return None
    except OSError as exc:
        if isinstance(exc, socket.timeout):
            return "connection timed out"
        return exc.strerror or str(exc)


def wait_reachable(host: str, port: int, deadline: Deadline, log: Log, who: str, interval: float) -> None:
    """Connect to host:port (resolving afresh every try: a recreated rank 0 gets a new IP), with backoff."""
    backoff = Backoff()
    throttle = Throttle(interval)
    while True:
        why = probe(host, port, min(2.0, deadline.remaining()))
        if why is None:
            log(who, f"rank 0 accepts connections on {host}:{port}")
            return
        if deadline.expired():
            raise TimeoutError(
                f"rank 0 did not accept connections on {host}:{port} within {deadline.seconds:g}s ({why})"
            )
        if throttle():
            log(
                who,
                f"waiting for rank 0 to accept connections on {host}:{port} ({why}); {deadline.elapsed():.1f}s so far",
            )
        backoff.sleep(deadline)


def port_bindable(port: int) -> bool:
    """Whether a server (SO_REUSEADDR, as torch's TCPStore and ZMQ use) could bind ``port`` now."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
                return True
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
    return True


def open_sockets() -> int | None:
    """Sockets this process holds open (Linux /proc), or None where that cannot be read."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    count = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count
