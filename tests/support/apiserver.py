"""Requests to the API server over one kept-alive HTTPS connection, and dry-run POSTs of ParallelDeployments.

``Connection``    method, path, JSON body → (status, decoded body); reconnects once when the connection drops
``DryRunClient``  POST a ParallelDeployment with ``dryRun=All&fieldValidation=Strict``: a ``DryRun`` (status,
                  body, warnings). Nothing is stored.
``apiserver_paths`` the field paths the API server names in a refusal
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from devcluster.cluster import LocalCluster
from wideep.api import constants

DRY_RUN_NAMESPACE = "default"
COLLECTION = f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{{ns}}/{constants.PLURAL}"


class Connection:
    """Requests to the API server over one kept-alive HTTPS connection (reconnects when it drops)."""

    def __init__(self, cluster: LocalCluster) -> None:
        url = urllib.parse.urlsplit(cluster.server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.context = ssl.create_default_context(cafile=str(cluster.ca_path))
        self.token = cluster.token
        self.conn: http.client.HTTPSConnection | None = None

    def send(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, list[str]]:
        """(status, raw body, Warning headers) of one request; a dropped connection is retried once."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.context, timeout=30
                )
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
                continue
            return resp.status, raw, list(resp.headers.get_all("Warning") or [])
        raise AssertionError("unreachable")

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        status, raw, _ = self.send(method, path, body)
        decoded = json.loads(raw) if raw else {}
        return status, decoded if isinstance(decoded, dict) else {}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


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
        self._connection = Connection(cluster)
        self._path = COLLECTION.format(ns=namespace) + "?dryRun=All&fieldValidation=Strict"

    def close(self) -> None:
        self._connection.close()

    def __call__(self, obj: dict[str, Any]) -> DryRun:
        status, raw, headers = self._connection.send("POST", self._path, obj)
        warnings = [_warning_text(w) for w in headers]
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"message": raw.decode(errors="replace")}
        return DryRun(status, decoded if isinstance(decoded, dict) else {}, warnings)


def _warning_text(header: str) -> str:
    """The text of an RFC 7234 Warning header as the API server sends it: ``299 - "text"``."""
    _, _, rest = header.partition(" - ")
    return rest.strip().strip('"') if rest else header


PATH_IN_MESSAGE = re.compile(r"(?:^|[\s\[\"'.(])((?:spec|metadata)\.[A-Za-z0-9_.\[\]]+)")


def apiserver_paths(result: DryRun) -> set[str]:
    """Field paths the API server names: its causes, and any path in the message (strict decoding errors)."""
    paths = {p for p in result.fields() if p and p != "<nil>"}
    paths |= {m.rstrip(".:") for m in PATH_IN_MESSAGE.findall(result.message)}
    return paths
