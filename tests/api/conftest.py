"""Fixtures for the API tests against a real API server.

``pdep_crd``  the generated CRD (``crd.crd()``, what the code generates now, not the committed file) and the
              deprecation-warning admission policy, server-side applied once per module and waited for:
              Established, served, and its CEL rules in force.
``dry_run``   send one object to the API server with ``dryRun=All&fieldValidation=Strict`` over a kept-alive
              HTTPS connection: returns a ``DryRun`` (status, body, warnings). Nothing is stored.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from devcluster.cluster import LocalCluster
from wideep.api import constants
from wideep.api.crd import crd
from wideep.api.generate import warnings_policy

from .factories import external_lb, parallel_deployment

DRY_RUN_NAMESPACE = "default"
COLLECTION = f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{{ns}}/{constants.PLURAL}"


@dataclass(frozen=True)
class DryRun:
    status: int
    body: dict[str, Any]
    warnings: list[str]

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) if not self.accepted else ""

    def fields(self) -> list[str]:
        """Field paths the API server names in its refusal (details.causes[].field, leading dot removed)."""
        causes = (self.body.get("details") or {}).get("causes") or []
        return [str(c.get("field", "")).lstrip(".") for c in causes if c.get("field")]


class DryRunClient:
    """POST ParallelDeployments with dryRun=All over one HTTPS connection, reconnecting when it drops."""

    def __init__(self, cluster: LocalCluster, namespace: str = DRY_RUN_NAMESPACE) -> None:
        url = urllib.parse.urlsplit(cluster.server)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 443
        self._context = ssl.create_default_context(cafile=str(cluster.ca_path))
        self._token = cluster.token
        self._path = COLLECTION.format(ns=namespace) + "?dryRun=All&fieldValidation=Strict"
        self._conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self._host, self._port, context=self._context, timeout=30
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __call__(self, obj: dict[str, Any]) -> DryRun:
        body = json.dumps(obj).encode()
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
                continue
            warnings = [_warning_text(w) for w in resp.headers.get_all("Warning") or []]
            try:
                decoded = json.loads(raw) if raw else {}
            except ValueError:
                decoded = {"message": raw.decode(errors="replace")}
            return DryRun(resp.status, decoded if isinstance(decoded, dict) else {}, warnings)
        raise AssertionError("unreachable")


def _warning_text(header: str) -> str:
    """The text of an RFC 7234 Warning header as the API server sends it: ``299 - "text"``."""
    _, _, rest = header.partition(" - ")
    return rest.strip().strip('"') if rest else header


def _kubectl_ok(cluster: LocalCluster, *args: str, input: str | None = None) -> str:
    proc = cluster.kubectl(*args, input=input)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def install_crd(cluster: LocalCluster) -> None:
    """Server-side apply the CRD and the warning policy (idempotent), then wait until both are in force."""
    docs = [crd(), *warnings_policy()]
    _kubectl_ok(
        cluster,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=wideep-api-tests",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs, sort_keys=False),
    )
    _kubectl_ok(cluster, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{constants.CRD_NAME}")
    client = DryRunClient(cluster)
    good = parallel_deployment("ready-probe")
    # a spec only the current CEL refuses (an older, looser CRD may still be in force for a moment)
    bad = external_lb("ready-probe", dp=1)
    try:
        wait_until("the ParallelDeployment resource to be served", lambda: client(good).accepted)
        wait_until(
            "the CRD's CEL rules to be in force",
            lambda: "external-lb-needs-dp" in client(bad).message,
        )
    finally:
        client.close()


@pytest.fixture(scope="module")
def pdep_crd(cluster: LocalCluster) -> LocalCluster:
    install_crd(cluster)
    return cluster


@pytest.fixture(scope="module")
def dry_run(pdep_crd: LocalCluster) -> Iterator[DryRunClient]:
    client = DryRunClient(pdep_crd)
    yield client
    client.close()
