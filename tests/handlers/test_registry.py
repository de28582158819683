"""The kopf registrations: event handlers only, so that kopf's diff base (NoDiffBase) is never needed."""

from __future__ import annotations

import kopf

from wideep.handlers.main import NoDiffBase, Runtime, build_registry
from wideep.kube.kubeconfig import Credentials
from wideep.reconcile.metrics import Metrics


def _registry() -> kopf.OperatorRegistry:
    return build_registry(Runtime(creds=Credentials(server="https://127.0.0.1:1"), metrics=Metrics()))


def test_handlers_have_no_diff() -> None:
    """kopf reads a diff base only for change-detecting (create/update/resume/delete) and spawning (daemon,
    timer) handlers; with none registered, NoDiffBase drops nothing a handler would see."""
    registry = _registry()
    assert registry._watching.get_all_handlers()  # on_pdep
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert not registry._indexing.get_all_handlers()


def test_no_diff_base_keeps_nothing() -> None:
    big = {"metadata": {"name": "g", "labels": {"a": "b"}}, "spec": {"x": list(range(1000))}, "status": {}}
    storage = NoDiffBase()
    body = kopf.Body(big)
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    storage.store(body=body, patch=kopf.Patch(), essence=storage.build(body=body))
    assert big["metadata"] == {"name": "g", "labels": {"a": "b"}}  # nothing written to the object
