"""Shared fixtures.

``cluster``   one real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok with fake
              GPU nodes) per pytest session; KUBECONFIG points at it for the whole session.
``namespace`` a fresh namespace per test, with its default ServiceAccount already there.

Tests that use ``cluster`` are marked ``cluster`` automatically (``pytest -m "not cluster"`` skips them).
When such a test fails, its report gets a section naming the control plane's logs folder and the tail of
kube-apiserver.log and kwok.log.

Each session runs its cluster in ``$WIDEEP_STATE_DIR/test-clusters/<pid>``; leftovers of sessions that died
without cleaning up (SIGKILL, OOM) are killed and removed when the next session starts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from devcluster.cluster import LocalCluster, cleanup_stale, find_controlplane, read_pids, state_root
from tests.support.cluster import create_namespace, delete_namespace, pid_alive
from tests.support.crd import install_crd
from tests.support.kube import Kube

_CLUSTER: LocalCluster | None = None
LOG_TAIL_COMPONENTS = ("kube-apiserver", "kwok")
LOG_TAIL_LINES = 30


def _reap_dead_sessions(root: Path) -> None:
    """Kill and remove the clusters of earlier pytest sessions that are no longer running."""
    if not root.is_dir():
        return
    for state_dir in root.iterdir():
        if not state_dir.is_dir():
            continue
        data = read_pids(state_dir)
        owner = int(data.get("owner_pid", 0)) if data else 0
        if owner and owner != os.getpid() and pid_alive(owner):
            continue  # another live session's cluster
        if data is None and time.time() - state_dir.stat().st_mtime < 120:
            continue  # possibly a session that is starting right now
        cleanup_stale(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def _stop_cluster() -> None:
    global _CLUSTER
    cluster, _CLUSTER = _CLUSTER, None
    if cluster is not None:
        cluster.stop()


def _install_signal_cleanup() -> None:
    """Stop the cluster on SIGTERM/SIGHUP too (pytest only unwinds fixtures on Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            _stop_cluster()
            if callable(previous):
                previous(sig, frame)
            else:
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)

        signal.signal(signum, handler)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The session's control plane, started on first use and stopped at the end of the session."""
    global _CLUSTER
    if find_controlplane() is None:
        pytest.fail("the local control plane is not built: run `make cluster-build` first", pytrace=False)
    root = state_root() / "test-clusters"
    _reap_dead_sessions(root)
    cluster = LocalCluster(root / str(os.getpid()))
    _CLUSTER = cluster
    atexit.register(_stop_cluster)
    _install_signal_cleanup()
    try:
        cluster.start()
        print(
            f"\n[cluster] control plane ready in {cluster.startup_seconds:.1f}s, logs in {cluster.logs_dir}"
        )
        with pytest.MonkeyPatch.context() as mp:
            for key, value in cluster.env().items():
                mp.setenv(key, value)
            yield cluster
    finally:
        _stop_cluster()


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace ``t-<random>`` whose default ServiceAccount exists; deleted afterwards (no wait)."""
    name = create_namespace(cluster)
    yield name
    delete_namespace(cluster, name)


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> None:
    """The generated CRD (and the deprecation-warning admission policy), installed once per session."""
    install_crd(cluster)


@pytest.fixture
def kube(cluster: LocalCluster, crd: None) -> Kube:
    """Test-side API access with the admin credentials (no operator code)."""
    return Kube(cluster)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    cluster = _CLUSTER
    if report.failed and cluster is not None and "cluster" in getattr(item, "fixturenames", ()):
        parts = [f"logs folder: {cluster.logs_dir}"]
        for component in LOG_TAIL_COMPONENTS:
            parts.append(
                f"--- last {LOG_TAIL_LINES} lines of {cluster.log_path(component)} ---\n"
                + cluster.log_tail(component, LOG_TAIL_LINES)
            )
        report.sections.append((f"control-plane logs ({report.when})", "\n".join(parts)))
    return report
