"""End-to-end: the operator authenticates like kubectl: an exec credential plugin whose tokens expire and
are revoked, and several kubeconfig files merged, with --context and a CA embedded as data."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.cluster import LocalCluster
from tests.support.builders import pdep
from tests.support.kube import Kube, uids
from tests.support.kubeconfig import kubeconfig_doc
from tests.support.operator import Operator
from tests.support.waits import wait_until

EXEC_API = "client.authentication.k8s.io/v1"


def _embedded_cluster(cluster: LocalCluster) -> dict[str, Any]:
    return {
        "server": cluster.server,
        "certificate-authority-data": base64.b64encode(Path(cluster.ca_path).read_bytes()).decode(),
    }


@pytest.fixture
def admins(cluster: LocalCluster, namespace: str) -> Iterator[dict[str, str]]:
    """Two ServiceAccounts bound to cluster-admin, and a 10-minute token of each (TokenRequest)."""
    tokens: dict[str, str] = {}
    for sa in ("cred-a", "cred-b"):
        cluster.api("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": sa}})
        cluster.api(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": f"{namespace}-{sa}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
            },
        )
        req = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        }
        out = cluster.api("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token", req)
        tokens[sa] = out["status"]["token"]
    try:
        yield tokens
    finally:
        for sa in tokens:
            cluster.request(
                "DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{namespace}-{sa}"
            )


def _authenticated(cluster: LocalCluster, token: str) -> bool:
    status, _ = cluster.request("GET", "/api/v1/namespaces", None, token=token)
    return status == 200


def test_an_exec_plugin_token_is_refreshed_when_it_expires_and_when_it_is_revoked(
    cluster: LocalCluster, crd: None, kube: Kube, namespace: str, admins: dict[str, str], tmp_path: Path
) -> None:
    """The plugin hands out cred-a's token, stated to expire after 8 s, then cred-b's. Once the operator has
    fetched the second, cred-a is deleted (its token is refused from then on): the operator keeps working."""
    calls = tmp_path / "calls"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        f"""import datetime as dt, json, os
calls = {str(calls)!r}
n = len(open(calls).read().splitlines()) + 1 if os.path.exists(calls) else 1
open(calls, "a").write("call\\n")
token, life = ({admins["cred-a"]!r}, 8) if n == 1 else ({admins["cred-b"]!r}, 3600)
exp = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=life)).strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": {EXEC_API!r}, "kind": "ExecCredential",
                  "status": {{"token": token, "expirationTimestamp": exp}}}}))
"""
    )
    kc = tmp_path / "kubeconfig"
    user = {
        "exec": {
            "apiVersion": EXEC_API,
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    kc.write_text(
        yaml.safe_dump(
            kubeconfig_doc(
                {"dev": _embedded_cluster(cluster)}, {"plugin": user}, {"dev": ("dev", "plugin")}, "dev"
            )
        )
    )
    op = Operator(cluster, [namespace], tmp_path, kubeconfig=kc).start()
    try:
        kube.apply(pdep("cred", namespace, dp=2))
        kube.wait_ready(namespace, "cred")
        wait_until(
            "the plugin asked again after the first token expired",
            lambda: len(calls.read_text().splitlines()) >= 2,
            timeout=30,
        )
        cluster.api("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/cred-a")
        wait_until(
            "cred-a's token refused", lambda: not _authenticated(cluster, admins["cred-a"]), timeout=30
        )
        before = uids(kube.live_pods(namespace, "cred"))
        kube.fail_pod(namespace, "cred-1")
        wait_until(
            "group restarted by the operator", lambda: kube.replaced(namespace, "cred", before, 2), timeout=60
        )
        assert op.alive()
        assert "Traceback" not in op.log(), op.log()[-3000:]
    finally:
        op.stop()
        kube.delete_all(namespace)


def test_merged_kubeconfig_files_and_a_context_other_than_the_current_one(
    cluster: LocalCluster, crd: None, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """$KUBECONFIG lists two files: the first one's current context points nowhere, the context given with
    --context comes from the second file and uses a cluster (CA embedded as data) and a user of the first."""
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.write_text(
        yaml.safe_dump(
            kubeconfig_doc(
                {"dev": _embedded_cluster(cluster), "nowhere": {"server": "https://127.0.0.1:1"}},
                {"admin": {"token": cluster.token}},
                {"broken": ("nowhere", "admin")},
                "broken",
            )
        )
    )
    second.write_text(yaml.safe_dump(kubeconfig_doc({}, {}, {"good": ("dev", "admin")}, "good")))
    op = Operator(
        cluster,
        [namespace],
        tmp_path,
        kubeconfig=first,
        extra=["--context", "good"],
        env={"KUBECONFIG": f"{first}:{second}", "TMPDIR": str(tmp_path / "no-such-dir")},
    ).start()
    try:
        kube.apply(pdep("merged", namespace, dp=2))
        kube.wait_ready(namespace, "merged")
        assert op.alive()
    finally:
        op.stop()
        kube.delete_all(namespace)
