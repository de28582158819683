"""Fixtures for the API tests against a real API server.

``pdep_crd``  the generated CRD (``crd.crd()``, what the code generates now, not the committed file) and the
              deprecation-warning admission policy, server-side applied once per module and waited for:
              Established, served, and its CEL rules in force (``tests.support.crd.install_crd``).
``dry_run``   send one object to the API server with ``dryRun=All&fieldValidation=Strict`` over a kept-alive
              HTTPS connection: returns a ``DryRun`` (status, body, warnings). Nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devcluster.cluster import LocalCluster
from tests.support.apiserver import DryRunClient
from tests.support.crd import install_crd


@pytest.fixture(scope="module")
def pdep_crd(cluster: LocalCluster) -> LocalCluster:
    install_crd(cluster, generated=True)
    return cluster


@pytest.fixture(scope="module")
def dry_run(pdep_crd: LocalCluster) -> Iterator[DryRunClient]:
    client = DryRunClient(pdep_crd)
    yield client
    client.close()
