"""Smoke tests of the local control plane itself: scheduling, kwok, GC, CEL validation, RBAC.

Everything runs against the real processes; nothing is mocked. Tests share the session's cluster, so each
uses its own namespace and gives back the GPUs it took before it ends.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.cluster import GPU_RESOURCE, LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT = 60
FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
TERMINAL = ("Succeeded", "Failed")


# --------------------------------------------------------------------------- helpers


def pod_manifest(name: str, gpus: int | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/fake:1"}
    if gpus is not None:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 0},
    }


def create_pod(cluster: LocalCluster, ns: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", manifest)


def get_pod(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{name}")


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return {}


def wait_running_ready(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = get_pod(cluster, ns, name)
        ok = pod["status"].get("phase") == "Running" and condition(pod, "Ready").get("status") == "True"
        return pod if ok else None

    result: dict[str, Any] = cluster.wait_for(f"pod {ns}/{name} Running and Ready", check, TIMEOUT)
    return result


def delete_pods_and_wait(cluster: LocalCluster, ns: str, names: list[str]) -> None:
    for name in names:
        cluster.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", {"gracePeriodSeconds": 0})
    cluster.wait_for(
        f"pods {names} gone from {ns}",
        lambda: all(cluster.request("GET", f"/api/v1/namespaces/{ns}/pods/{n}")[0] == 404 for n in names),
        TIMEOUT,
    )


def gpus_in_use(cluster: LocalCluster) -> int:
    used = 0
    for pod in cluster.api("GET", "/api/v1/pods").get("items", []):
        if not pod["spec"].get("nodeName") or pod["status"].get("phase") in TERMINAL:
            continue
        for c in pod["spec"]["containers"]:
            used += int(c.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0))
    return used


def kwok_nodes(cluster: LocalCluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
    return items


@pytest.fixture
def gpu_pods(cluster: LocalCluster, namespace: str) -> Iterator[list[str]]:
    """Names of pods the test creates; deleted (and waited for) afterwards so their GPUs are free."""
    names: list[str] = []
    yield names
    delete_pods_and_wait(cluster, namespace, names)


# --------------------------------------------------------------------------- (a) schedule + kwok


def test_gpu_pod_is_scheduled_and_becomes_ready(
    cluster: LocalCluster, namespace: str, gpu_pods: list[str]
) -> None:
    gpu_pods.append("gpu8")
    create_pod(cluster, namespace, pod_manifest("gpu8", gpus=8))
    pod = wait_running_ready(cluster, namespace, "gpu8")

    assert pod["spec"]["nodeName"] in cluster.node_names
    assert condition(pod, "PodScheduled").get("status") == "True"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert pod["status"].get("podIP", "").startswith("10.244.")
    node = cluster.api("GET", f"/api/v1/nodes/{pod['spec']['nodeName']}")
    assert node["status"]["allocatable"][GPU_RESOURCE] == "8"


# --------------------------------------------------------------------------- (b) GPU capacity is honoured


def test_fifth_full_node_pod_is_unschedulable(
    cluster: LocalCluster, namespace: str, gpu_pods: list[str]
) -> None:
    cluster.wait_for("every GPU free", lambda: gpus_in_use(cluster) == 0, TIMEOUT)
    nodes = kwok_nodes(cluster)
    per_node = {int(n["status"]["allocatable"][GPU_RESOURCE]) for n in nodes}
    assert per_node == {cluster.gpus_per_node}, per_node
    gpus = cluster.gpus_per_node

    fillers = [f"fill-{i}" for i in range(len(nodes))]
    for name in fillers:
        gpu_pods.append(name)
        create_pod(cluster, namespace, pod_manifest(name, gpus=gpus))
    placed = {wait_running_ready(cluster, namespace, n)["spec"]["nodeName"] for n in fillers}
    assert placed == {n["metadata"]["name"] for n in nodes}, "one full-node pod per node"

    gpu_pods.append("extra")
    create_pod(cluster, namespace, pod_manifest("extra", gpus=gpus))

    def unschedulable() -> dict[str, Any] | None:
        cond = condition(get_pod(cluster, namespace, "extra"), "PodScheduled")
        return cond if cond.get("status") == "False" and cond.get("reason") == "Unschedulable" else None

    cond = cluster.wait_for("pod extra Unschedulable", unschedulable, TIMEOUT)
    assert f"Insufficient {GPU_RESOURCE}" in cond.get("message", ""), cond
    time.sleep(1)
    extra = get_pod(cluster, namespace, "extra")
    assert extra["status"]["phase"] == "Pending"
    assert not extra["spec"].get("nodeName")

    # Capacity, not something else, kept it out: free one node and it gets scheduled there.
    delete_pods_and_wait(cluster, namespace, [fillers[0]])
    gpu_pods.remove(fillers[0])
    assert wait_running_ready(cluster, namespace, "extra")["spec"]["nodeName"]


# --------------------------------------------------------------------------- (c) garbage collection


def test_deleting_owner_garbage_collects_dependent(cluster: LocalCluster, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = cluster.api(
        "POST", base, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}, "data": {}}
    )
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": False,
    }
    cluster.api(
        "POST",
        base,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dependent", "ownerReferences": [ref]},
        },
    )
    cluster.api("POST", base, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bystander"}})

    assert cluster.request("GET", f"{base}/dependent")[0] == 200
    cluster.api("DELETE", f"{base}/owner", {"propagationPolicy": "Background"})
    cluster.wait_for(
        "dependent garbage-collected", lambda: cluster.request("GET", f"{base}/dependent")[0] == 404, TIMEOUT
    )
    assert cluster.request("GET", f"{base}/bystander")[0] == 200


def test_orphan_propagation_keeps_dependent(cluster: LocalCluster, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = cluster.api(
        "POST", base, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
    )
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    cluster.api(
        "POST",
        base,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kid", "ownerReferences": [ref]}},
    )
    cluster.api("DELETE", f"{base}/owner", {"propagationPolicy": "Orphan"})
    cluster.wait_for("owner gone", lambda: cluster.request("GET", f"{base}/owner")[0] == 404, TIMEOUT)
    kid = cluster.api("GET", f"{base}/kid")
    assert not kid["metadata"].get("ownerReferences"), "the GC strips the orphaned owner reference"


# --------------------------------------------------------------------------- (d) kwok failure injection


def test_running_pod_with_failure_label_turns_failed(
    cluster: LocalCluster, namespace: str, gpu_pods: list[str]
) -> None:
    gpu_pods.append("victim")
    create_pod(cluster, namespace, pod_manifest("victim", gpus=1))
    wait_running_ready(cluster, namespace, "victim")

    cluster.api(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/victim",
        {"metadata": {"labels": {FAIL_LABEL: "true"}}},
        content_type="application/merge-patch+json",
    )

    def failed() -> dict[str, Any] | None:
        pod = get_pod(cluster, namespace, "victim")
        return pod if pod["status"].get("phase") == "Failed" else None

    pod = cluster.wait_for("pod victim Failed", failed, TIMEOUT)
    state = pod["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] == 1, state
    assert condition(pod, "Ready").get("status") == "False"


# --------------------------------------------------------------------------- (e) CEL validation of a CRD


def test_crd_cel_rule_rejects_violating_object(cluster: LocalCluster, namespace: str) -> None:
    group = f"s{secrets.token_hex(4)}.smoke.wideep.test"
    message = "minReplicas must not exceed maxReplicas"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "minReplicas": {"type": "integer"},
                                        "maxReplicas": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {"rule": "self.minReplicas <= self.maxReplicas", "message": message}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{group}"
    cluster.api("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    try:
        cluster.wait_for(
            "CRD Established",
            lambda: condition(cluster.api("GET", crd_path), "Established").get("status") == "True",
            TIMEOUT,
        )

        def widget(name: str, lo: int, hi: int) -> str:
            obj = {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }
            return json.dumps(obj)

        # A valid object goes in (retried: kubectl's discovery can lag the new CRD by a moment).
        cluster.wait_for(
            "valid Widget applied",
            lambda: cluster.kubectl("apply", "-f", "-", input=widget("good", 1, 2)).returncode == 0,
            TIMEOUT,
            interval=0.5,
        )
        # A violating one is refused by the CEL rule, with the rule's message, through kubectl ...
        bad = cluster.kubectl("apply", "-f", "-", input=widget("bad", 3, 2))
        assert bad.returncode != 0, bad.stdout
        assert message in bad.stderr, bad.stderr
        # ... and through the API: 422 Invalid naming the field.
        status, body = cluster.request(
            "POST", f"/apis/{group}/v1/namespaces/{namespace}/widgets", json.loads(widget("bad", 5, 1))
        )
        assert status == 422, body
        assert body["reason"] == "Invalid"
        assert message in body["message"]
        assert cluster.request("GET", f"/apis/{group}/v1/namespaces/{namespace}/widgets/bad")[0] == 404
    finally:
        cluster.request("DELETE", crd_path)


# --------------------------------------------------------------------------- (f) TokenRequest + RBAC


def test_serviceaccount_token_and_rbac(cluster: LocalCluster, namespace: str) -> None:
    sa = "reader"
    cluster.api(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}},
    )
    token = cluster.create_token(namespace, sa)
    pods = f"/api/v1/namespaces/{namespace}/pods"

    # The token authenticates as the ServiceAccount ...
    review = cluster.api(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        token=token,
    )
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{sa}"
    # ... and is authorized for nothing yet; a forged token is not even authenticated.
    assert cluster.request("GET", pods, token=token)[0] == 403
    assert cluster.request("GET", pods, token=token[:-4] + "AAAA")[0] == 401

    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    cluster.api(
        "POST",
        f"{rbac}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
    )
    cluster.api(
        "POST",
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        },
    )
    cluster.wait_for(
        "RoleBinding in effect", lambda: cluster.request("GET", pods, token=token)[0] == 200, TIMEOUT
    )

    status, body = cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets", token=token)
    assert status == 403, body
    assert body["reason"] == "Forbidden"
    assert cluster.request("GET", "/api/v1/namespaces/default/pods", token=token)[0] == 403
    assert cluster.request("GET", "/api/v1/pods", token=token)[0] == 403
    status, body = cluster.request(
        "POST", pods, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, token=token
    )
    assert status == 403, body

    can_i = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, f"--as=system:serviceaccount:{namespace}:{sa}"
    )
    assert can_i.stdout.strip() == "yes", can_i
