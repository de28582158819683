"""Kubeconfig documents for the tests of credentials (the loader, the operator, the image)."""

from __future__ import annotations

from typing import Any


def kubeconfig_doc(
    clusters: dict[str, dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    contexts: dict[str, tuple[str, str]] | None = None,
    current: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig: clusters and users by name, contexts as name -> (cluster, user), the current context."""
    cfg: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in (clusters or {}).items()],
        "users": [{"name": n, "user": u} for n, u in (users or {}).items()],
        "contexts": [
            {"name": n, "context": {"cluster": c, "user": u}} for n, (c, u) in (contexts or {}).items()
        ],
    }
    if current:
        cfg["current-context"] = current
    return cfg
