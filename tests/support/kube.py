"""Test-side access to the API server with the admin credentials (no operator code).

``Kube``     apply (kubectl, as a user would), read ParallelDeployments, pods, Services, events, conditions;
             fail or end pods through kwok's stages; wait until a group is Ready
``Watcher``  records every event of a namespaced collection from the moment it is entered
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Self

from devcluster.cluster import EXIT_LABEL, LocalCluster, find_kubectl
from tests.support.waits import wait_until
from wideep.api import constants as c

API = f"/apis/{c.GROUP}/{c.VERSION}"
PDEPS = f"/apis/{c.API_VERSION}/namespaces/{{ns}}/{c.PLURAL}"


class Kube:
    """Test-side API access through the admin credentials (urllib, no operator code)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                self.cluster_kubectl(),
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=test-user",
                "-f",
                "-",
            ],
            input=json.dumps(obj),
            capture_output=True,
            text=True,
            env={**os.environ, **self.cluster.env()},
            check=False,
        )

    def cluster_kubectl(self) -> str:
        return find_kubectl()

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cluster_kubectl(), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.cluster.env()},
            check=False,
        )

    def get_pdep(self, ns: str, name: str) -> dict[str, Any] | None:
        status, body = self.cluster.request("GET", f"{API}/namespaces/{ns}/{c.PLURAL}/{name}")
        return body if status == 200 else None

    def pods(self, ns: str, name: str | None = None) -> list[dict[str, Any]]:
        sel = f"?labelSelector={c.LABEL_DEPLOYMENT}%3D{name}" if name else ""
        items: list[dict[str, Any]] = self.cluster.api("GET", f"/api/v1/namespaces/{ns}/pods{sel}")["items"]
        return items

    def services(self, ns: str, name: str) -> list[dict[str, Any]]:
        sel = f"?labelSelector={c.LABEL_DEPLOYMENT}%3D{name}"
        items: list[dict[str, Any]] = self.cluster.api("GET", f"/api/v1/namespaces/{ns}/services{sel}")[
            "items"
        ]
        return items

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.api(
            "GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}"
        )["items"]
        return items

    def condition(self, ns: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get_pdep(ns, name)
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return None

    def is_ready(self, ns: str, name: str) -> bool:
        obj = self.get_pdep(ns, name)
        if not obj:
            return False
        st = obj.get("status") or {}
        cond = self.condition(ns, name, c.COND_READY)
        return bool(
            cond
            and cond["status"] == "True"
            and st.get("observedGeneration") == obj["metadata"]["generation"]
        )

    def wait_ready(self, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
        wait_until(f"{ns}/{name} Ready", lambda: self.is_ready(ns, name), timeout=timeout)
        obj = self.get_pdep(ns, name)
        assert obj is not None
        return obj

    def live_pods(self, ns: str, name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(ns, name) if not p["metadata"].get("deletionTimestamp")]

    def replaced(self, ns: str, name: str, before: set[str], count: int) -> bool:
        """The group runs ``count`` live pods, none of them in ``before``, and is Ready. One listing, taken
        before the status is read: two listings could see the old pods, then none while the restart deletes
        them, and the status read first could still be the old generation's Ready."""
        live = uids(self.live_pods(ns, name))
        return len(live) == count and not (live & before) and self.is_ready(ns, name)

    def fail_pod(self, ns: str, pod: str) -> None:
        patch = {"metadata": {"labels": {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}}}
        self.cluster.api(
            "PATCH", f"/api/v1/namespaces/{ns}/pods/{pod}", patch, content_type="application/merge-patch+json"
        )

    def exit_pod(self, ns: str, pod: str, message: str = "") -> None:
        """kwok ends the Running pod's containers with exit code 0 and the pod Succeeded (our stage
        pod-exited.yaml): what a vLLM rank does when a DP peer died."""
        meta: dict[str, Any] = {"labels": {EXIT_LABEL: "true"}}
        if message:
            meta["annotations"] = {f"{EXIT_LABEL}/message": message}
        self.cluster.api(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{pod}",
            {"metadata": meta},
            content_type="application/merge-patch+json",
        )

    def delete_all(self, ns: str, timeout: float = 120) -> None:
        self.cluster.request("DELETE", f"{API}/namespaces/{ns}/{c.PLURAL}", None)
        wait_until(f"pods of {ns} gone", lambda: not self.pods(ns), timeout=timeout, interval=0.3)


def uids(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["uid"] for p in pods}


class Watcher:
    """Records every event of a namespaced collection (pods by default) from the moment it is entered."""

    def __init__(
        self, cluster: LocalCluster, namespace: str, collection: str = "/api/v1/namespaces/{ns}/pods"
    ) -> None:
        self.cluster = cluster
        self.path = collection.format(ns=namespace)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []  # time.monotonic() when each event arrived
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rv = self.cluster.api("GET", self.path)["metadata"]["resourceVersion"]
        url = f"{self.cluster.server}{self.path}?watch=1&resourceVersion={rv}&timeoutSeconds=120"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.cluster.token}"})
        ctx = ssl.create_default_context(cafile=str(self.cluster.ca_path))
        with urllib.request.urlopen(req, context=ctx, timeout=130) as resp:
            for line in resp:
                if self._stop.is_set():
                    return
                ev = json.loads(line)
                self.times.append(time.monotonic())
                self.events.append((ev["type"], ev["object"]))

    def __enter__(self) -> Self:
        self.thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def first_rv(self, pred: Callable[[str, dict[str, Any]], bool]) -> int:
        """The resourceVersion of the first event matching pred. One etcd serves every resource here, so
        resourceVersions of pods and ParallelDeployments are revisions of one store and compare in order."""
        return next(int(o["metadata"]["resourceVersion"]) for t, o in self.events if pred(t, o))
