"""The Helm chart charts/wideep-operator: lint, render, schema, security scan, and install on the real
control plane with the operator running under the chart's own RBAC.

The install tests run the operator locally (``python -m wideep run``) with a kubeconfig that holds a
TokenRequest token of the chart's ServiceAccount, so the permissions it has are exactly the chart's. The
chart's own Deployment runs under kwok (no image is pulled); it is only checked to be admitted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.cluster import LocalCluster
from tests.support import ROOT
from tests.support.builders import IMAGE, load_example, parallel_deployment
from tests.support.chart import CHART, argocd_health, helm, render
from tests.support.cluster import can_i, create_namespace, delete_namespace, free_port
from tests.support.kube import API
from tests.support.operator import operator_log_clean
from wideep import __version__
from wideep.api import constants as c
from wideep.api.generate import crd_yaml, version_problems
from wideep.cli import build_parser

README = CHART / "README.md"
VAP_NAME = f"{c.CRD_NAME}-deprecations"

# Exactly what the operator calls (reconcile/kube.py + kopf's watches), nothing more.
OPERATOR_RULES = [
    {"apiGroups": ["wideep.dev"], "resources": ["paralleldeployments"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["wideep.dev"],
        "resources": ["paralleldeployments/status"],
        "verbs": ["get", "patch", "update"],
    },
    {
        "apiGroups": [""],
        "resources": ["pods", "services"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]


# --------------------------------------------------------------------------------------------- helpers


def kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = kinds(docs).get(kind, [])
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


# --------------------------------------------------------------------------------------------- offline


def test_chart_versions_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["version"] == chart["appVersion"] == package == __version__
    assert version_problems() == []


def test_chart_crd_is_the_generated_crd() -> None:
    assert (CHART / "crds" / f"{c.CRD_NAME}.yaml").read_text() == crd_yaml()
    assert (ROOT / "crds" / f"{c.CRD_NAME}.yaml").read_text() == crd_yaml()


@pytest.mark.parametrize(
    "sets", [[], ["watchNamespaces={team-a,team-b}", "leaderElection.enabled=true", "replicas=2"]]
)
def test_helm_lint(sets: list[str]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_template_cluster_wide_mode() -> None:
    docs = render()
    by_kind = kinds(docs)
    assert set(by_kind) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    role = one(docs, "ClusterRole")
    assert role["rules"] == OPERATOR_RULES
    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "wideep-system"}
    ]
    assert role["metadata"]["name"] == "wideep-system-wideep-wideep-operator", (
        "cluster names carry the namespace"
    )
    args = container(docs)["args"]
    assert args[0] == "run"
    assert "--all-namespaces" in args
    assert not any(a.startswith("--namespace") or a.startswith("--leader-elect") for a in args)
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    for d in docs:
        if d["kind"] not in (
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ):
            assert d["metadata"]["namespace"] == "wideep-system", d["kind"]


def test_template_namespaced_mode() -> None:
    docs = render("watchNamespaces={team-a,team-b}")
    by_kind = kinds(docs)
    assert "ClusterRole" not in by_kind
    assert "ClusterRoleBinding" not in by_kind
    roles = {r["metadata"]["namespace"]: r for r in by_kind["Role"]}
    bindings = {r["metadata"]["namespace"]: r for r in by_kind["RoleBinding"]}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    sa_name = one(docs, "ServiceAccount")["metadata"]["name"]
    for ns in ("team-a", "team-b"):
        assert roles[ns]["rules"] == OPERATOR_RULES
        assert bindings[ns]["roleRef"]["kind"] == "Role"
        assert bindings[ns]["roleRef"]["name"] == roles[ns]["metadata"]["name"]
        assert bindings[ns]["subjects"] == [
            {"kind": "ServiceAccount", "name": sa_name, "namespace": "wideep-system"}
        ]
    args = container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args


def test_rbac_never_grants_secrets_nodes_wildcards_or_spec_writes() -> None:
    for docs in (
        render(),
        render("watchNamespaces={a}"),
        render("leaderElection.enabled=true", "replicas=3"),
    ):
        for d in docs:
            if d["kind"] not in ("Role", "ClusterRole"):
                continue
            for rule in d["rules"]:
                assert "*" not in rule["verbs"]
                assert "*" not in rule["resources"]
                assert "*" not in rule["apiGroups"]
                assert not {"secrets", "nodes", "configmaps", "serviceaccounts"} & set(rule["resources"])
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
                if "paralleldeployments" in rule["resources"]:
                    assert set(rule["verbs"]) <= {"get", "list", "watch"}, "the operator never writes spec"


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int)
    assert psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    ctr = container(docs)
    sc = ctr["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged") is False
    assert not pod.get("hostNetwork")
    assert not pod.get("hostPID")
    assert not pod.get("hostIPC")
    for vol in pod["volumes"]:
        assert set(vol) <= {"name", "emptyDir", "configMap", "secret", "projected", "downwardAPI"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert ctr[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert "--liveness-port=8080" in ctr["args"]
    assert "--metrics-port=9090" in ctr["args"]
    assert set(ctr["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(ctr["resources"]["requests"])
    assert {"cpu", "memory"} <= set(ctr["resources"]["limits"])
    assert ctr["image"] == f"ghcr.io/wideep/wideep-operator:{__version__}"


def test_metrics_service_and_optional_service_monitor() -> None:
    docs = render()
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert "ServiceMonitor" not in kinds(docs), "off by default"
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()


LEASE_RULES = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["ops"],
        "verbs": ["get", "update"],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]


@pytest.mark.parametrize("mode", [[], ["watchNamespaces={a,b}"]])
def test_leader_election_mode(mode: list[str]) -> None:
    docs = render(*mode, "leaderElection.enabled=true", "replicas=2", "leaderElection.leaseName=ops")
    by_kind = kinds(docs)
    lease_roles = [r for r in by_kind["Role"] if r["metadata"]["name"].endswith("-leader-election")]
    assert len(lease_roles) == 1
    assert lease_roles[0]["metadata"]["namespace"] == "wideep-system", (
        "the Lease lives in the release namespace"
    )
    assert lease_roles[0]["rules"] == LEASE_RULES
    binding = next(b for b in by_kind["RoleBinding"] if b["metadata"]["name"].endswith("-leader-election"))
    assert binding["roleRef"]["name"] == lease_roles[0]["metadata"]["name"]
    assert binding["metadata"]["namespace"] == "wideep-system"
    for role in [*by_kind.get("ClusterRole", []), *by_kind["Role"]]:
        if role not in lease_roles:
            assert role["rules"] == OPERATOR_RULES, "Leases are granted in the release namespace only"
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    args = container(docs)["args"]
    assert "--leader-elect=ops" in args and "--lease-seconds=15" in args
    env = container(docs)["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in env
    assert not any(
        r["metadata"]["name"].endswith("-leader-election") for r in kinds(render(*mode)).get("Role", [])
    )


def test_every_rendered_flag_is_one_wideep_run_accepts() -> None:
    docs = render(
        "watchNamespaces={a,b}",
        "leaderElection.enabled=true",
        "leaderElection.leaseSeconds=30",
        "operator.verbose=true",
        "operator.resyncSeconds=30",
        "operator.workers=4",
        "operator.concurrency=8",
        "operator.warmConnections=0",
        "operator.statusProgressSeconds=0",
        "operator.logFormat=plain",
    )
    args = container(docs)["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.namespace == ["a", "b"]
    assert (parsed.leader_elect, parsed.lease_seconds) == ("wideep-operator", 30.0)
    assert parsed.log_format == "plain"
    assert (parsed.resync_seconds, parsed.workers, parsed.concurrency, parsed.verbose) == (30.0, 4, 8, True)
    assert parsed.warm_connections == 0, (
        "0 turns warm connections off: it must not be dropped as a false value"
    )
    assert parsed.status_progress_seconds == 0.0, "0 writes every status at once: it must not be dropped"
    default = build_parser().parse_args(container(render())["args"])
    assert default.all_namespaces is True and default.warm_connections is None
    assert default.status_progress_seconds == 2.0


def test_image_digest_wins_over_the_tag() -> None:
    digest = "sha256:" + "ab" * 32
    assert container(render(f"image.digest={digest}"))["image"] == f"ghcr.io/wideep/wideep-operator@{digest}"
    assert container(render("image.tag=0.1.0-rc1"))["image"].endswith(":0.1.0-rc1")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["replicas=-1"], "at '/replicas': minimum: got -1, want 0"),
        (["replicas=2"], "2 replicas need leaderElection.enabled=true"),
        (["leaderElection.leaseSeconds=1"], "at '/leaderElection/leaseSeconds': minimum: got 1, want 3"),
        (["operator.logFormat=xml"], "at '/operator/logFormat': value must be one of 'json', 'plain'"),
        (["watchNamespaces={Team_A}"], "at '/watchNamespaces/0': 'Team_A' does not match pattern"),
        (["image.tag=latest"], 'image.tag: "latest" is refused'),
        (["image.digest=deadbeef"], "at '/image/digest': 'deadbeef' does not match pattern"),
        (["runAsUser=0"], "at '/runAsUser': minimum: got 0, want 1"),
        (["metrics.port=80"], "at '/metrics/port': minimum: got 80"),
        (["operator.livenessPort=9090"], "operator.livenessPort and metrics.port must differ"),
        (["rbca.create=false"], "additional properties 'rbca' not allowed"),
        (["resources.limits.gpu=1"], "additional properties 'gpu' not allowed"),
        (["metrics.serviceMonitor.interval=often"], "at '/metrics/serviceMonitor/interval'"),
        (
            ["serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(sets: list[str], message: str) -> None:
    args = ["template", "x", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------- security scan

CHECKOV_INSTALL = ROOT / "tools" / "checkov.sh"


def documented_exceptions() -> dict[str, str]:
    """Checks the README's security-scan table excepts, with why: | `CKV_K8S_NN` | title | why |."""
    found = {}
    for line in README.read_text().splitlines():
        m = re.match(r"\|\s*`(CKV2?_K8S_\d+)`\s*\|([^|]+)\|([^|]+)\|", line)
        if m:
            found[m.group(1)] = m.group(3).strip()
    return found


def checkov(folder: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["bash", str(CHECKOV_INSTALL)], check=False, capture_output=True, text=True, timeout=540
    )
    if proc.returncode != 0:
        pytest.skip(f"checkov could not be installed (tools/checkov.sh): {proc.stderr[-500:]}")
    binary = proc.stdout.strip().splitlines()[-1]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    out = subprocess.run(
        [binary, "-d", str(folder), "--framework", "kubernetes", "--skip-download", "--quiet", "-o", "json"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    assert reports, out.stdout[:500]
    assert reports[0].get("check_type") == "kubernetes", out.stdout[:500]
    summary = reports[0]["summary"]
    assert summary["passed"] > 50, f"checkov checked almost nothing: {summary}"
    assert summary["parsing_errors"] == 0, summary
    return list(reports[0]["results"].get("failed_checks", []))


def test_security_scan_of_the_rendered_chart(tmp_path: Path) -> None:
    """checkov on `helm template` output of both RBAC modes: every finding is an exception explained in the
    chart's README, and setting image.digest clears all but the ServiceAccount-token one."""
    exceptions = documented_exceptions()
    assert exceptions, "README.md has the table of scanner exceptions"
    renders = {
        "default.yaml": [],
        "namespaced.yaml": ["watchNamespaces={team-a,team-b}", "leaderElection.enabled=true", "replicas=2"],
        "servicemonitor.yaml": ["metrics.serviceMonitor.enabled=true"],
    }
    for name, sets in renders.items():
        (tmp_path / name).write_text(yaml.safe_dump_all(render(*sets)))
    failed = checkov(tmp_path)
    unexplained = [
        (f["check_id"], f["check_name"], f["resource"]) for f in failed if f["check_id"] not in exceptions
    ]
    assert not unexplained, f"findings without an exception in {README.relative_to(ROOT)}: {unexplained}"
    assert {f["check_id"] for f in failed} == set(exceptions), "every documented exception is still needed"

    pinned = tmp_path / "pinned"
    pinned.mkdir()
    (pinned / "digest.yaml").write_text(yaml.safe_dump_all(render("image.digest=sha256:" + "0" * 64)))
    assert {f["check_id"] for f in checkov(pinned)} == {"CKV_K8S_38"}


# --------------------------------------------------------------------------------------------- on the cluster


@contextlib.contextmanager
def local_operator(
    kubeconfig: Path, args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    """`python -m wideep run ARGS` with only the given kubeconfig; yields its metrics port; always stopped."""
    live, metrics = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "wideep", "run", *args,
        "--liveness-port", str(live), "--metrics-port", str(metrics), "--log-format", "plain",
    ]  # fmt: skip
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "WIDEEP_CLUSTER_"))}
    run_env.update({"KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT / "operator"), **(env or {})})
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=run_env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"operator exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{live}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"operator not live:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        yield metrics
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _ready(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any] | None:
    obj = cluster.api("GET", f"{API}/namespaces/{ns}/{c.PLURAL}/{name}")
    status = obj.get("status") or {}
    conds = {cd["type"]: cd["status"] for cd in status.get("conditions", [])}
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return obj if current and conds.get(c.COND_READY) == "True" else None


def _apply_example(cluster: LocalCluster, ns: str, doc: dict[str, Any]) -> None:
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": ns}}
    proc = cluster.kubectl(
        "apply", "--server-side", "--field-manager=gitops", "-f", "-", input=json.dumps(doc)
    )
    assert proc.returncode == 0, proc.stderr


def _vap_owned_by_someone_else(cluster: LocalCluster) -> bool:
    """The deprecation-warnings policy is cluster-scoped; when another tool already applied it (the e2e tests
    apply crds/), this release must not try to own it."""
    status, _body = cluster.request(
        "GET", f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{VAP_NAME}"
    )
    return status == 200


def _pods(cluster: LocalCluster, ns: str, selector: str) -> list[dict[str, Any]]:
    return list(cluster.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}").get("items", []))


def _delete_pdeps(cluster: LocalCluster, ns: str) -> None:
    """Delete what a test left, and wait: a later cluster-wide operator must not find it."""
    with contextlib.suppress(Exception):
        cluster.request("DELETE", f"{API}/namespaces/{ns}/{c.PLURAL}", {"propagationPolicy": "Background"})
        cluster.wait_for(
            f"ParallelDeployments in {ns} gone",
            lambda: not cluster.api("GET", f"{API}/namespaces/{ns}/{c.PLURAL}").get("items"),
            timeout=30,
        )


def test_install_namespaced_rbac_operator_reaches_ready_upgrade_uninstall(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Release in its own namespace (PodSecurity `restricted` enforced), watching one app namespace."""
    op_ns = create_namespace(
        cluster,
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )
    app_ns = create_namespace(cluster)
    other_ns = create_namespace(cluster)
    release = "wideep"
    installed = False
    try:
        sets = ["--set", f"watchNamespaces={{{app_ns}}}"]
        if _vap_owned_by_someone_else(cluster):
            sets += ["--set", "deprecationWarnings.enabled=false"]
        helm("install", release, str(CHART), "-n", op_ns, *sets, kubeconfig=cluster.kubeconfig)
        installed = True

        # CRD (from crds/), ServiceAccount, Role + RoleBinding in the watched namespace only.
        proc = cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{c.CRD_NAME}")
        assert proc.returncode == 0, proc.stderr
        sa_name = "wideep-wideep-operator"
        sa = cluster.api("GET", f"/api/v1/namespaces/{op_ns}/serviceaccounts/{sa_name}")
        assert sa["automountServiceAccountToken"] is False
        role_name = f"{op_ns}-{sa_name}"
        cluster.api("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{app_ns}/roles/{role_name}")
        cluster.api("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{app_ns}/rolebindings/{role_name}")
        status, _ = cluster.request("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role_name}")
        assert status == 404, "namespaced mode creates nothing cluster-wide"

        # The chart's own operator pod passes PodSecurity `restricted` (kwok then fakes it Running).
        selector = "app.kubernetes.io/name=wideep-operator"
        pods = cluster.wait_for(
            "the operator pod (admitted as restricted)", lambda: _pods(cluster, op_ns, selector), 60
        )
        assert pods[0]["spec"]["serviceAccountName"] == sa_name

        # What the ServiceAccount may and may not do (asked of the API server's authorizer).
        who = f"system:serviceaccount:{op_ns}:{sa_name}"
        assert can_i(cluster, who, "watch", "paralleldeployments.wideep.dev", "-n", app_ns)
        assert can_i(
            cluster, who, "patch", "paralleldeployments.wideep.dev", "--subresource=status", "-n", app_ns
        )
        assert can_i(cluster, who, "delete", "pods", "-n", app_ns)
        assert can_i(cluster, who, "create", "events", "-n", app_ns)
        assert not can_i(cluster, who, "update", "paralleldeployments.wideep.dev", "-n", app_ns), (
            "spec is never written"
        )
        assert not can_i(cluster, who, "get", "secrets", "-n", app_ns)
        assert not can_i(cluster, who, "list", "secrets", "-n", op_ns)
        assert not can_i(cluster, who, "get", "nodes")
        for ns in (other_ns, op_ns, "default"):
            assert not can_i(cluster, who, "list", "pods", "-n", ns)
            assert not can_i(cluster, who, "create", "pods", "-n", ns)
            assert not can_i(cluster, who, "list", "paralleldeployments.wideep.dev", "-n", ns)
        assert not can_i(cluster, who, "list", "pods", "--all-namespaces")

        # The operator, run locally with exactly that ServiceAccount's token, brings the example to Ready.
        kubeconfig = cluster.write_kubeconfig(
            tmp_path / "sa.kubeconfig", cluster.create_token(op_ns, sa_name), "sa"
        )
        log = tmp_path / "operator.log"
        doc = load_example("deepseek-v3-wide-ep")
        name = doc["metadata"]["name"]
        with local_operator(kubeconfig, ["--namespace", app_ns], log):
            _apply_example(cluster, app_ns, doc)
            t0 = time.monotonic()
            obj = cluster.wait_for(
                f"{name} Ready", lambda: _ready(cluster, app_ns, name), timeout=120, interval=0.2
            )
            print(f"\n[chart] {name}: Ready in {time.monotonic() - t0:.1f}s under the chart's RBAC")
            assert obj["status"]["ready"] == "16/16"
            assert argocd_health(obj) == {"status": "Healthy", "message": "all 16 DP ranks ready in 16 pods"}
            operator_log_clean(log)

        # GitOps: the operator owns status and children only; spec stays the GitOps tool's.
        obj = cluster.api("GET", f"{API}/namespaces/{app_ns}/{c.PLURAL}/{name}")
        entries = obj["metadata"]["managedFields"]
        ours = [e for e in entries if e["manager"] == c.FIELD_MANAGER]
        assert ours, entries
        assert all(e.get("subresource") == "status" for e in ours), ours
        assert all("f:spec" not in e.get("fieldsV1", {}) for e in ours)
        spec_owners = {e["manager"] for e in entries if "f:spec" in e.get("fieldsV1", {})}
        assert spec_owners == {"gitops"}
        assert not obj["metadata"].get("finalizers")
        assert not [k for k in obj["metadata"].get("annotations", {}) if "kopf" in k]
        rank_pods = _pods(cluster, app_ns, f"{c.LABEL_DEPLOYMENT}={name}")
        assert len(rank_pods) == 16
        for pod in rank_pods:
            assert c.FIELD_MANAGER in {e["manager"] for e in pod["metadata"]["managedFields"]}
        # Re-applying the same manifest is a no-op for the GitOps tool: nothing to take back from the operator.
        before = obj["metadata"]["generation"]
        _apply_example(cluster, app_ns, doc)
        after = cluster.api("GET", f"{API}/namespaces/{app_ns}/{c.PLURAL}/{name}")
        assert after["metadata"]["generation"] == before

        # helm upgrade with changed values; the documented CRD upgrade command works.
        helm(
            "upgrade", release, str(CHART), "-n", op_ns, "--reuse-values",
            "--set", "operator.logFormat=plain", "--set", "resources.limits.memory=768Mi",
            kubeconfig=cluster.kubeconfig,
        )  # fmt: skip
        dep = cluster.api("GET", f"/apis/apps/v1/namespaces/{op_ns}/deployments/wideep-wideep-operator")
        ctr = dep["spec"]["template"]["spec"]["containers"][0]
        assert "--log-format=plain" in ctr["args"]
        assert f"--namespace={app_ns}" in ctr["args"]
        assert ctr["resources"]["limits"]["memory"] == "768Mi"
        assert (
            json.loads(
                helm("status", release, "-n", op_ns, "-o", "json", kubeconfig=cluster.kubeconfig).stdout
            )["version"]
            == 2
        )
        crds = helm("show", "crds", str(CHART)).stdout
        proc = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
        assert proc.returncode == 0, proc.stderr

        # helm uninstall: the CRD (crds/) stays, so ParallelDeployments and their pods stay, unmanaged.
        helm("uninstall", release, "-n", op_ns, "--wait", kubeconfig=cluster.kubeconfig)
        installed = False
        for path in (
            f"/api/v1/namespaces/{op_ns}/serviceaccounts/{sa_name}",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{app_ns}/roles/{role_name}",
            f"/apis/apps/v1/namespaces/{op_ns}/deployments/wideep-wideep-operator",
        ):
            assert cluster.request("GET", path)[0] == 404, path
        assert (
            cluster.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c.CRD_NAME}")[0]
            == 200
        )
        assert _ready(cluster, app_ns, name) is not None
        assert len(_pods(cluster, app_ns, f"{c.LABEL_DEPLOYMENT}={name}")) == 16
    finally:
        if installed:
            helm("uninstall", release, "-n", op_ns, kubeconfig=cluster.kubeconfig, check=False)
        _delete_pdeps(cluster, app_ns)
        for ns in (app_ns, other_ns, op_ns):
            delete_namespace(cluster, ns)


def test_install_cluster_wide_rbac_with_leader_election(cluster: LocalCluster, tmp_path: Path) -> None:
    """Default (cluster-wide) RBAC plus leader election: the operator, run with the ServiceAccount's token and
    --all-namespaces, takes its Lease in the release namespace (and may touch no other Lease) and reconciles a
    ParallelDeployment in any namespace."""
    op_ns = create_namespace(cluster)
    app_ns = create_namespace(cluster)
    release = f"wideep-{secrets.token_hex(2)}"
    lease = f"wideep-{secrets.token_hex(3)}"
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{op_ns}/leases/{lease}"
    installed = False
    try:
        sets = [
            "--set",
            "leaderElection.enabled=true",
            "--set",
            f"leaderElection.leaseName={lease}",
            "--set",
            "replicas=2",
        ]
        if _vap_owned_by_someone_else(cluster):
            sets += ["--set", "deprecationWarnings.enabled=false"]
        helm("install", release, str(CHART), "-n", op_ns, *sets, kubeconfig=cluster.kubeconfig)
        installed = True
        sa_name = f"{release}-wideep-operator"
        cluster_name = f"{op_ns}-{sa_name}"
        role = cluster.api("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{cluster_name}")
        assert role["rules"][: len(OPERATOR_RULES)] == OPERATOR_RULES
        cluster.api("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{cluster_name}")

        who = f"system:serviceaccount:{op_ns}:{sa_name}"
        assert can_i(cluster, who, "list", "pods", "--all-namespaces")
        assert can_i(cluster, who, "watch", "paralleldeployments.wideep.dev", "--all-namespaces")
        assert can_i(cluster, who, "update", f"leases.coordination.k8s.io/{lease}", "-n", op_ns)
        assert can_i(cluster, who, "create", "leases.coordination.k8s.io", "-n", op_ns)
        assert not can_i(cluster, who, "update", "leases.coordination.k8s.io/someone-else", "-n", op_ns)
        assert not can_i(cluster, who, "update", f"leases.coordination.k8s.io/{lease}", "-n", app_ns)
        assert not can_i(cluster, who, "create", "leases.coordination.k8s.io", "-n", app_ns)
        assert not can_i(cluster, who, "get", "secrets", "--all-namespaces")
        assert not can_i(cluster, who, "get", "nodes")
        assert not can_i(cluster, who, "create", "clusterroles")
        assert not can_i(cluster, who, "delete", "namespaces")
        assert not can_i(cluster, who, "create", "deployments", "-n", app_ns)

        kubeconfig = cluster.write_kubeconfig(
            tmp_path / "sa.kubeconfig", cluster.create_token(op_ns, sa_name), "sa"
        )
        log = tmp_path / "operator.log"
        doc = parallel_deployment(
            "small",
            namespace=app_ns,
            parallel_config={
                "dataParallelSize": 2,
                "dataParallelExternalLb": True,
                "enableExpertParallel": True,
            },
            containers=[{"name": "vllm", "image": IMAGE, "args": ["m"]}],
        )
        with local_operator(
            kubeconfig,
            ["--all-namespaces", "--leader-elect", lease],
            log,
            {"POD_NAME": "chart-test", "POD_NAMESPACE": op_ns},
        ):
            cluster.wait_for(
                "our identity in the Lease",
                lambda: cluster.api("GET", lease_path)["spec"].get("holderIdentity") == "chart-test",
                timeout=60,
            )
            _apply_example(cluster, app_ns, doc)
            cluster.wait_for("small Ready", lambda: _ready(cluster, app_ns, "small"), timeout=120)
            operator_log_clean(log)

        helm("uninstall", release, "-n", op_ns, "--wait", kubeconfig=cluster.kubeconfig)
        installed = False
        assert (
            cluster.request("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{cluster_name}")[0]
            == 404
        )
        assert cluster.api("GET", lease_path)["spec"].get("holderIdentity") in (None, ""), (
            "the operator released its Lease when it stopped"
        )
        assert _ready(cluster, app_ns, "small") is not None, "the ParallelDeployment outlives the release"
    finally:
        if installed:
            helm("uninstall", release, "-n", op_ns, kubeconfig=cluster.kubeconfig, check=False)
        _delete_pdeps(cluster, app_ns)
        for ns in (app_ns, op_ns):
            delete_namespace(cluster, ns)
