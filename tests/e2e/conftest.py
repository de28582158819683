from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import LocalCluster
from tests.support.kube import Kube
from tests.support.operator import Operator


@pytest.fixture
def operator(
    cluster: LocalCluster, crd: None, namespace: str, kube: Kube, tmp_path: Path
) -> Iterator[Operator]:
    """`wideep run --namespace <ns>` as a real process; stopped, and the namespace's groups deleted, afterwards."""
    op = Operator(cluster, [namespace], tmp_path).start()
    try:
        yield op
    finally:
        rc = op.stop()
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            kube.delete_all(namespace)
        print(f"operator exit code {rc}; log: {op.log_path}")
