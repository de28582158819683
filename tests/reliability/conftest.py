"""Fixtures of the reliability suite: faults, load and bad input on the real control plane.

``crd``, ``kube``, ``namespace`` come from tests/conftest.py;
``gpu_pool``   extra fake GPU nodes for one module (16 x 8 GPUs by default), tainted so that only groups
               that tolerate them (``on_pool``) land there; removed when the module ends
``operators``  starts ``wideep run`` processes (``tests.support.operator.Operator``); whatever still runs at
               the end of the test is stopped, and its log path printed

The figures each test reports (``tests.support.reliability.report``) are printed again in the terminal
summary.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import LocalCluster
from tests.support.cluster import tainted_pool
from tests.support.reliability import FIGURES, POOL_NODES, POOL_TAINT, Operators


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("wideep reliability figures")
    for test, figures in FIGURES:
        terminalreporter.write_line(f"{test}: " + json.dumps(figures, default=str))


@pytest.fixture(scope="module")
def gpu_pool(cluster: LocalCluster) -> Iterator[str]:
    """POOL_NODES fake nodes x 8 GPUs, labelled and tainted ``pool=<value>``; yields the value."""
    with tainted_pool(
        cluster, f"{POOL_TAINT}-{secrets.token_hex(2)}", POOL_NODES, drain_timeout=120
    ) as value:
        yield value


@pytest.fixture
def operators(cluster: LocalCluster, crd: None, tmp_path: Path) -> Iterator[Operators]:
    ops = Operators(cluster, tmp_path)
    try:
        yield ops
    finally:
        ops.stop_all()
