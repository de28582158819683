"""Access: what the operator's ServiceAccount and a read-only user can and cannot do, asked of the real API
server with real tokens (TokenRequest), not only of `kubectl auth can-i`.

The operator's RBAC is the Helm chart's own (``charts/wideep-operator``, namespaced mode, rendered with
``helm template``; only its ServiceAccount, Role and RoleBinding are applied). The operator runs with nothing
but a kubeconfig holding that ServiceAccount's token: it reconciles a group and gang-restarts it, and every
request it makes for Secrets is refused. A user who may only read ParallelDeployments cannot trigger a
retry, a restart (rank pod delete, eviction, kwok failure label), a scale or a status write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import LocalCluster
from tests.support.builders import pdep
from tests.support.chart import render
from tests.support.cluster import can_i, create_namespace, delete_namespace
from tests.support.kube import API, Kube, uids
from tests.support.operator import operator_log_clean
from tests.support.reliability import Operators, report
from tests.support.waits import wait_until
from wideep.api import constants as c

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


@pytest.fixture
def namespaces(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    op_ns, app_ns = create_namespace(cluster), create_namespace(cluster)
    try:
        yield op_ns, app_ns
    finally:
        cluster.request("DELETE", f"{API}/namespaces/{app_ns}/{c.PLURAL}", None)
        for ns in (app_ns, op_ns):
            delete_namespace(cluster, ns)


@pytest.mark.slow
def test_chart_serviceaccount_reconciles_but_reads_no_secrets_and_a_reader_cannot_restart(
    cluster: LocalCluster, kube: Kube, operators: Operators, namespaces: tuple[str, str], tmp_path: Path
) -> None:
    op_ns, app_ns = namespaces
    docs = [d for d in render(f"watchNamespaces={{{app_ns}}}", namespace=op_ns) if d["kind"] in RBAC_KINDS]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}, (
        "the chart's namespaced RBAC"
    )
    proc = cluster.kubectl(
        "apply", "--server-side", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs)
    )
    assert proc.returncode == 0, proc.stderr
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    who = f"system:serviceaccount:{op_ns}:{sa}"
    sa_token = cluster.create_token(op_ns, sa)
    cluster.api(
        "POST",
        f"/api/v1/namespaces/{app_ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf-token"},
            "stringData": {"token": "x"},
        },
    )
    denied: list[str] = []

    def refused(method: str, path: str, body: Any = None, token: str = sa_token, **kw: Any) -> None:
        status, answer = cluster.request(method, path, body, token=token, **kw)
        assert status == 403, f"{method} {path} -> {status}, expected 403 Forbidden: {answer.get('message')}"
        denied.append(f"{method} {path.split('?', maxsplit=1)[0]}")

    # 1. The chart's ServiceAccount reads no Secret, anywhere.
    for ns in (app_ns, op_ns):
        refused("GET", f"/api/v1/namespaces/{ns}/secrets")
        assert not can_i(cluster, who, "get", "secrets", "-n", ns)
    refused("GET", f"/api/v1/namespaces/{app_ns}/secrets/hf-token")
    refused("GET", "/api/v1/secrets")
    refused("GET", f"/api/v1/namespaces/{app_ns}/secrets?watch=1&timeoutSeconds=1")

    # 2. ... yet the operator, holding only that token, reconciles a group and gang-restarts it.
    op = operators.start_as(
        [app_ns], cluster.write_kubeconfig(tmp_path / "operator.kubeconfig", sa_token, "operator")
    )
    name = "guarded"
    t0 = time.monotonic()
    assert kube.apply(pdep(name, app_ns, dp=2)).returncode == 0
    kube.wait_ready(app_ns, name, timeout=60)
    ready_s = time.monotonic() - t0
    before = uids(kube.live_pods(app_ns, name))
    kube.fail_pod(app_ns, f"{name}-1")
    wait_until(
        "the gang restart under the chart's RBAC", lambda: kube.replaced(app_ns, name, before, 2), timeout=60
    )
    # Refusals named as the API server and both clients name them ("403" alone matched a log timestamp).
    operator_log_clean(op.log_path)

    # 3. A user who may only read ParallelDeployments.
    reader = "pdep-reader"
    for obj in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": reader, "namespace": app_ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": reader, "namespace": app_ns},
            "rules": [{"apiGroups": [c.GROUP], "resources": [c.PLURAL], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": reader, "namespace": app_ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": reader},
            "subjects": [{"kind": "ServiceAccount", "name": reader, "namespace": app_ns}],
        },
    ):
        proc = cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(obj))
        assert proc.returncode == 0, proc.stderr
    token = cluster.create_token(app_ns, reader)
    obj_path = f"{API}/namespaces/{app_ns}/{c.PLURAL}/{name}"
    wait_until(
        "the reader's Role in force",
        lambda: cluster.request("GET", obj_path, token=token)[0] == 200,
        timeout=30,
    )
    assert cluster.request("GET", f"{API}/namespaces/{app_ns}/{c.PLURAL}", token=token)[0] == 200
    group_before = kube.get_pdep(app_ns, name)
    assert group_before is not None
    pods_before = uids(kube.live_pods(app_ns, name))
    assert len(pods_before) == 2 and group_before["status"]["groupRestarts"] == 1, (
        "the group after one restart"
    )
    merge = "application/merge-patch+json"
    pod0 = f"/api/v1/namespaces/{app_ns}/pods/{name}-0"
    refused(
        "PATCH",
        obj_path,
        {"metadata": {"annotations": {c.ANNOTATION_RETRY: "now"}}},
        token,
        content_type=merge,
    )
    refused(
        "PATCH",
        obj_path + "?fieldManager=reader",
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": name, "annotations": {c.ANNOTATION_RETRY: "x"}},
        },
        token,
        content_type="application/apply-patch+yaml",
    )
    refused("DELETE", pod0, None, token)
    refused("DELETE", f"/api/v1/namespaces/{app_ns}/pods", None, token)
    refused(
        "POST",
        pod0 + "/eviction",
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": f"{name}-0", "namespace": app_ns},
        },
        token,
    )
    refused(
        "PATCH",
        pod0,
        {"metadata": {"labels": {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}}},
        token,
        content_type=merge,
    )
    refused("PATCH", obj_path + "/scale", {"spec": {"replicas": 4}}, token, content_type=merge)
    refused("PATCH", obj_path + "/status", {"status": {"groupRestarts": 0}}, token, content_type=merge)
    refused("PUT", obj_path, group_before, token)
    refused("DELETE", obj_path, None, token)
    refused("GET", f"/api/v1/namespaces/{app_ns}/secrets/hf-token", None, token)

    time.sleep(2.0)
    after = kube.get_pdep(app_ns, name)
    assert after is not None
    assert uids(kube.live_pods(app_ns, name)) == pods_before, "a read-only user restarted the group"
    assert after["status"]["groupRestarts"] == group_before["status"]["groupRestarts"]
    assert c.ANNOTATION_RETRY not in (after["metadata"].get("annotations") or {})
    assert after["metadata"]["generation"] == group_before["metadata"]["generation"]
    report(
        "access",
        rbac_from="charts/wideep-operator (helm template, namespaced mode)",
        operator_ready_ms=round(ready_s * 1000),
        gang_restart_under_chart_rbac=True,
        requests_refused=len(denied),
        refused=denied,
    )
