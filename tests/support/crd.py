"""``install_crd``: the ParallelDeployment CRD and the deprecation-warning admission policy, in force."""

from __future__ import annotations

from typing import Any

import yaml

from devcluster.cluster import LocalCluster
from tests.support import ROOT
from tests.support.apiserver import DryRunClient
from tests.support.builders import external_lb, parallel_deployment
from tests.support.waits import wait_until
from wideep.api import constants
from wideep.api.crd import crd
from wideep.api.generate import warnings_policy

CRDS = ROOT / "crds"
FIELD_MANAGER = "wideep-tests"


def install_crd(cluster: LocalCluster, *, generated: bool = False) -> None:
    """Server-side apply the CRD and the warning policy (idempotent), then wait until they are in force:
    the CRD Established, ParallelDeployments served, and its CEL rules refusing what they refuse.

    The files under ``crds/`` (what a user applies), or with ``generated`` what the code generates now
    (``crd()`` and ``warnings_policy()``, which the API tests hold to the code before ``make generate``).
    """
    docs: list[dict[str, Any]] = (
        [crd(), *warnings_policy()]
        if generated
        else [d for path in sorted(CRDS.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    )
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs, sort_keys=False),
    )
    assert proc.returncode == 0, f"applying the CRD failed:\n{proc.stderr}"

    def established() -> bool:
        obj = cluster.api(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{constants.CRD_NAME}"
        )
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(cd["type"] == "Established" and cd["status"] == "True" for cd in conds)

    wait_until(f"crd/{constants.CRD_NAME} Established", established)
    client = DryRunClient(cluster)
    good = parallel_deployment("ready-probe")
    # a spec only the current CEL refuses (an older, looser CRD may still be in force for a moment)
    bad = external_lb("ready-probe", dp=1)
    try:
        # Established is not yet served: the first requests answer 429 "storage is (re)initializing".
        wait_until(
            "the ParallelDeployment resource to be served", lambda: client(good).accepted, interval=0.2
        )
        wait_until(
            "the CRD's CEL rules to be in force",
            lambda: "external-lb-needs-dp" in client(bad).message,
            interval=0.2,
        )
    finally:
        client.close()
