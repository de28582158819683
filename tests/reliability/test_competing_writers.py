"""Competing writers: another client (field manager ``intruder``) edits fields the operator owns on rank pods
and on the group's Services.

The operator must take its fields back (server-side apply, forced, under its own field manager), leave the
intruder's other fields alone, restart nothing, and then settle: over several resync periods it makes no
further write (counted on its /metrics endpoint).

One operator (``--resync-seconds 3``) watches the module's namespace; each test has its own group.
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
from tests.support.cluster import create_namespace, delete_namespace
from tests.support.kube import Kube, uids
from tests.support.operator import Operator
from tests.support.reliability import Operators, report
from tests.support.waits import wait_until
from wideep.api import constants as c

pytestmark = pytest.mark.slow

INTRUDER = "intruder"
RESYNC = 3.0  # the Operator helper runs `wideep run --resync-seconds 3`
SETTLE_WINDOW = 2 * RESYNC + 1.0
RESTORE_TIMEOUT = 4 * RESYNC + 3.0


@pytest.fixture(scope="module")
def arena(
    cluster: LocalCluster, crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Operator]]:
    ns = create_namespace(cluster)
    ops = Operators(cluster, Path(tmp_path_factory.mktemp("operators")))
    try:
        yield ns, ops.start([ns])
    finally:
        ops.stop_all()
        Kube(cluster).delete_all(ns)
        delete_namespace(cluster, ns)


class Group:
    """One Ready group of the arena, with the intruder's verbs."""

    def __init__(
        self, cluster: LocalCluster, kube: Kube, ns: str, op: Operator, name: str, dp: int = 3
    ) -> None:
        self.cluster, self.kube, self.ns, self.op, self.name = cluster, kube, ns, op, name
        assert kube.apply(pdep(name, ns, dp=dp)).returncode == 0
        kube.wait_ready(ns, name)
        self.uids = uids(kube.live_pods(ns, name))
        self.pods_path = f"/api/v1/namespaces/{ns}/pods"
        self.svc_path = f"/api/v1/namespaces/{ns}/services"

    def patch(self, path: str, body: dict[str, Any], patch_type: str, force: bool = False) -> None:
        query = f"?fieldManager={INTRUDER}" + ("&force=true" if force else "")
        self.cluster.api("PATCH", path + query, body, content_type=patch_type)

    def pod(self, index: int) -> dict[str, Any]:
        return self.cluster.api("GET", f"{self.pods_path}/{self.name}-{index}")

    def service(self, suffix: str) -> dict[str, Any]:
        return self.cluster.api("GET", f"{self.svc_path}/{self.name}-{suffix}")

    def writes(self) -> dict[str, float]:
        return {
            k.split('"')[1]: v
            for k, v in self.op.metrics().items()
            if k.startswith("wideep_api_writes_total{")
        }

    def wait_restored(self, what: str, predicate: Any) -> float:
        t0 = time.monotonic()
        wait_until(what, predicate, timeout=RESTORE_TIMEOUT, interval=0.1)
        return time.monotonic() - t0

    def settle(self) -> dict[str, float]:
        """Writes the operator makes over SETTLE_WINDOW seconds (2 resyncs), by kind; {} when settled."""
        time.sleep(1.0)
        before = self.writes()
        time.sleep(SETTLE_WINDOW)
        after = self.writes()
        return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}

    def assert_untouched(self) -> None:
        assert uids(self.kube.live_pods(self.ns, self.name)) == self.uids, (
            "a competing writer caused a restart"
        )
        obj = self.kube.get_pdep(self.ns, self.name)
        assert obj is not None and obj["status"]["groupRestarts"] == 0
        assert self.kube.is_ready(self.ns, self.name)


def _owners(obj: dict[str, Any], needle: str) -> set[str]:
    """Field managers whose managed fields mention ``needle`` (a label key, a port)."""
    return {
        e["manager"]
        for e in obj["metadata"].get("managedFields", [])
        if needle in json.dumps(e.get("fieldsV1"))
    }


def test_owned_label_values_and_target_port_are_taken_back(
    cluster: LocalCluster, kube: Kube, arena: tuple[str, Operator]
) -> None:
    """Update and forced apply of owned pod labels, forced apply of an owned Service targetPort."""
    g = Group(cluster, kube, *arena, name="values")
    writes0 = sum(g.writes().values())
    # An update (merge patch, like `kubectl label --overwrite`) of an owned label, plus a label of its own.
    g.patch(
        f"{g.pods_path}/values-1",
        {"metadata": {"labels": {c.LABEL_DP_RANK: "99", "intruder.example/owned": "yes"}}},
        "application/merge-patch+json",
    )
    # A forced server-side apply of another owned label: the intruder takes ownership of it.
    g.patch(
        f"{g.pods_path}/values-0",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "values-0", "labels": {c.LABEL_POD_INDEX: "2"}},
        },
        "application/apply-patch+yaml",
        force=True,
    )
    # A forced apply of the targetPort of an owned Service port.
    g.patch(
        f"{g.svc_path}/values-master",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "values-master"},
            "spec": {"ports": [{"port": 29550, "protocol": "TCP", "targetPort": 31999}]},
        },
        "application/apply-patch+yaml",
        force=True,
    )
    took = g.wait_restored(
        "the operator's label values and targetPort back",
        lambda: (
            g.pod(1)["metadata"]["labels"].get(c.LABEL_DP_RANK) == "1"
            and g.pod(0)["metadata"]["labels"].get(c.LABEL_POD_INDEX) == "0"
            and any(
                p["port"] == 29550 and p["targetPort"] == 29550 for p in g.service("master")["spec"]["ports"]
            )
        ),
    )
    to_restore = sum(g.writes().values()) - writes0
    p1, p0 = g.pod(1), g.pod(0)
    assert p1["metadata"]["labels"].get("intruder.example/owned") == "yes", (
        "the operator removed a foreign label"
    )
    assert c.FIELD_MANAGER in _owners(p1, f"f:{c.LABEL_DP_RANK}")
    assert INTRUDER not in _owners(p1, f"f:{c.LABEL_DP_RANK}")
    assert _owners(p0, f"f:{c.LABEL_POD_INDEX}") == {c.FIELD_MANAGER}
    extra = g.settle()
    report(
        "competing_writers/values",
        intrusions=3,
        restored_in_ms=round(took * 1000),
        writes_to_restore=to_restore,
        writes_after_restore=extra,
        settle_window_s=SETTLE_WINDOW,
    )
    assert not extra, (
        f"the operator keeps writing after restoring its fields: {extra} in {SETTLE_WINDOW:.0f}s"
    )
    g.assert_untouched()


def test_service_port_list_replaced_by_another_client_is_restored_and_settles(
    cluster: LocalCluster, kube: Kube, arena: tuple[str, Operator]
) -> None:
    """A JSON merge patch replaces the HTTP Service's ports (8000 -> 9000, same name), as `kubectl edit` would.

    The operator's port entry (key port 8000/TCP) must come back, and the Service must be valid and stable.
    """
    g = Group(cluster, kube, *arena, name="ports")
    g.patch(
        f"{g.svc_path}/ports-http",
        {"spec": {"ports": [{"name": "http", "port": 9000, "targetPort": 8000, "protocol": "TCP"}]}},
        "application/merge-patch+json",
    )

    def restored() -> bool:
        return any(p["port"] == 8000 and p["targetPort"] == 8000 for p in g.service("http")["spec"]["ports"])

    try:
        took = g.wait_restored("port 8000 back on ports-http", restored)
    except AssertionError:
        cond = kube.condition(g.ns, "ports", c.COND_PROGRESSING) or {}
        pytest.fail(
            f"the operator never restored its port: {g.service('http')['spec']['ports']}; "
            f"Progressing: {cond.get('message')}",
            pytrace=False,
        )
    extra = g.settle()
    report("competing_writers/ports-replaced", restored_in_ms=round(took * 1000), writes_after_restore=extra)
    assert not extra, f"the operator keeps writing: {extra}; ports {g.service('http')['spec']['ports']}"
    g.assert_untouched()


def test_extra_port_of_another_manager_does_not_make_the_operator_write_forever(
    cluster: LocalCluster, kube: Kube, arena: tuple[str, Operator]
) -> None:
    """The intruder server-side applies its own extra port to an owned Service (a field it owns, not the
    operator's). Whatever the operator decides about it, it must settle: no write on every resync."""
    g = Group(cluster, kube, *arena, name="extra")
    g.patch(
        f"{g.svc_path}/extra-http",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "extra-http"},
            "spec": {"ports": [{"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"}]},
        },
        "application/apply-patch+yaml",
    )
    time.sleep(RESYNC)
    extra = g.settle()
    ports = [(p.get("name"), p["port"]) for p in g.service("http")["spec"]["ports"]]
    report("competing_writers/extra-port", writes_after_intrusion=extra, window_s=SETTLE_WINDOW, ports=ports)
    assert ("http", 8000) in ports
    assert not extra, (
        f"the operator writes on every resync, forever: {extra} in {SETTLE_WINDOW:.0f}s; ports {ports}"
    )
    g.assert_untouched()


def test_removed_deployment_label_is_restored(
    cluster: LocalCluster, kube: Kube, arena: tuple[str, Operator]
) -> None:
    """`kubectl label pod <rank> wideep.dev/deployment-`: the pod leaves its Services (rank DNS, HTTP) until the
    operator puts its label back."""
    g = Group(cluster, kube, *arena, name="unlabel")
    g.patch(
        f"{g.pods_path}/unlabel-2",
        {"metadata": {"labels": {c.LABEL_DEPLOYMENT: None}}},
        "application/merge-patch+json",
    )
    try:
        took = g.wait_restored(
            "wideep.dev/deployment back on unlabel-2",
            lambda: g.pod(2)["metadata"]["labels"].get(c.LABEL_DEPLOYMENT) == "unlabel",
        )
    except AssertionError:
        pytest.fail(
            f"label {c.LABEL_DEPLOYMENT} not restored in {RESTORE_TIMEOUT:.0f}s (the pod is out of its rank "
            f"Service while status says {kube.get_pdep(g.ns, 'unlabel')['status']['ready']} ready)",  # type: ignore[index]
            pytrace=False,
        )
    report("competing_writers/unlabel", restored_in_ms=round(took * 1000))
    g.assert_untouched()


def test_relabelled_pods_cause_no_gang_restart(
    cluster: LocalCluster, kube: Kube, arena: tuple[str, Operator]
) -> None:
    """The intruder removes app.kubernetes.io/managed-by from one rank and wideep.dev/deployment from another:
    label edits are no rank failure, so nothing is restarted; both labels come back."""
    g = Group(cluster, kube, *arena, name="relabel")
    g.patch(
        f"{g.pods_path}/relabel-2",
        {"metadata": {"labels": {c.LABEL_DEPLOYMENT: None}}},
        "application/merge-patch+json",
    )
    g.patch(
        f"{g.pods_path}/relabel-1",
        {"metadata": {"labels": {c.LABEL_MANAGED_BY: None}}},
        "application/merge-patch+json",
    )
    time.sleep(2 * RESYNC)
    obj = kube.get_pdep(g.ns, "relabel")
    assert obj is not None
    live = kube.pods(g.ns)
    st = obj["status"]
    report(
        "competing_writers/relabel",
        group_restarts=st["groupRestarts"],
        ready=st["ready"],
        reason=(kube.condition(g.ns, "relabel", c.COND_READY) or {}).get("reason"),
        pods=sorted(p["metadata"]["name"] for p in live if p["metadata"]["name"].startswith("relabel-")),
    )
    assert st["groupRestarts"] == 0, (
        f"removing labels from two healthy ranks restarted the whole group: {st.get('lastRestartReason')}; "
        f"Ready={st['ready']} ({(kube.condition(g.ns, 'relabel', c.COND_READY) or {}).get('message')})"
    )
    g.assert_untouched()


def test_real_failure_after_a_label_edit_still_recovers(
    cluster: LocalCluster, kube: Kube, arena: tuple[str, Operator]
) -> None:
    """A rank lost its wideep.dev/deployment label to another client; later another rank really fails. The gang
    restart must complete: the group is Ready again with new pods (it must not wait forever for a pod it
    cannot see go away)."""
    g = Group(cluster, kube, *arena, name="after")
    g.patch(
        f"{g.pods_path}/after-2",
        {"metadata": {"labels": {c.LABEL_DEPLOYMENT: None}}},
        "application/merge-patch+json",
    )
    time.sleep(1.0)
    kube.fail_pod(g.ns, "after-0")
    t0 = time.monotonic()

    def recovered() -> bool:
        pods = [p for p in kube.pods(g.ns) if p["metadata"]["name"].startswith("after-")]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return len(live) == 3 and not (uids(live) & g.uids) and kube.is_ready(g.ns, "after")

    try:
        wait_until("the group restarted and Ready", recovered, timeout=45, interval=0.3)
    except AssertionError:
        obj = kube.get_pdep(g.ns, "after") or {}
        cond = kube.condition(g.ns, "after", c.COND_READY) or {}
        pods = [p["metadata"]["name"] for p in kube.pods(g.ns) if p["metadata"]["name"].startswith("after-")]
        pytest.fail(
            f"the gang restart never completed: Ready={cond.get('status')} {cond.get('reason')}: "
            f"{cond.get('message')!r}; pods now {pods}; status.ready {obj.get('status', {}).get('ready')}",
            pytrace=False,
        )
    report(
        "competing_writers/failure-after-label-edit", recovered_in_ms=round((time.monotonic() - t0) * 1000)
    )
