from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from wideep.devcluster.cluster import LocalCluster

from .support import ROOT, Kube, Operator


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> None:
    """The generated CRD (and the deprecation-warning admission policy), installed once."""
    proc = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert proc.returncode == 0, proc.stderr
    proc = cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/paralleldeployments.wideep.dev"
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def kube(cluster: LocalCluster, crd: None) -> Kube:
    return Kube(cluster)


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
