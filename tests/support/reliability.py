"""The reliability suite's figures, checks and operator bookkeeping (its fixtures: tests/reliability/conftest.py).

``report`` prints a test's figures and collects them for the terminal summary (shown without ``-s``).
``convergence_problems`` is the one definition of "converged to exactly the plan" every fault test waits
for (``wait_converged``). ``Operators`` starts ``wideep run`` processes for one test and stops them all.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster.cluster import LocalCluster
from tests.support.kube import API, Kube
from tests.support.operator import Operator
from wideep.api import constants as c
from wideep.api.validate import validate_object
from wideep.planning.planner import HASH_LABEL_CHARS, plan

POOL_TAINT = "wideep-reliability"
POOL_NODES = int(os.environ.get("WIDEEP_RELIABILITY_POOL_NODES", "16"))

FIGURES: list[tuple[str, dict[str, Any]]] = []


# --------------------------------------------------------------------------------------------- figures


def report(test: str, **figures: Any) -> None:
    """Print one test's figures (trials, faults survived, inputs, ms, MB) and keep them for the summary."""
    FIGURES.append((test, figures))
    print(f"\n[reliability] {test}: " + json.dumps(figures, sort_keys=False, default=str))


def percentiles(values: list[float], qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    """Nearest-rank percentiles, rounded to 0.1 ms when values are in ms."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for q in qs:
        rank = max(1, math.ceil(q * len(ordered)))
        out[f"p{round(q * 100):d}"] = round(ordered[rank - 1], 1)
    out["max"] = round(ordered[-1], 1)
    return out


def histogram_quantiles(
    metrics: dict[str, float], name: str, qs: tuple[float, ...] = (0.5, 0.9, 0.99)
) -> dict[str, float]:
    """Quantiles (in ms) of a Prometheus histogram, interpolated inside buckets like histogram_quantile()."""
    buckets: list[tuple[float, float]] = []
    prefix = f'{name}_bucket{{le="'
    for key, value in metrics.items():
        if key.startswith(prefix):
            le = key[len(prefix) : key.index('"', len(prefix))]
            buckets.append((math.inf if le == "+Inf" else float(le), value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float] = {}
    if not total:
        return out
    for q in qs:
        target = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= target:
                if math.isinf(bound):
                    value = lower_bound
                else:
                    span = count - lower_count
                    frac = (target - lower_count) / span if span else 1.0
                    value = lower_bound + (bound - lower_bound) * frac
                out[f"p{round(q * 100):d}"] = round(value * 1000, 1)
                break
            lower_bound, lower_count = bound, count
    return out


def status_rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


# --------------------------------------------------------------------------------------------- cluster and operators


def purge(cluster: LocalCluster, ns: str, timeout: float = 60) -> None:
    """Delete every ParallelDeployment of ``ns``, then its pods directly (the garbage collector takes minutes
    for hundreds of pods on 2 cores; kwok finalizes directly deleted pods at once), and wait for them."""
    cluster.request("DELETE", f"{API}/namespaces/{ns}/{c.PLURAL}", None)
    cluster.request("DELETE", f"/api/v1/namespaces/{ns}/pods", None)
    with contextlib.suppress(TimeoutError):
        cluster.wait_for(
            f"pods of {ns} gone",
            lambda: not cluster.api("GET", f"/api/v1/namespaces/{ns}/pods")["items"],
            timeout=timeout,
            interval=0.5,
        )


class Operators:
    """Starts operators for one test and stops every one still running at its end."""

    def __init__(self, cluster: LocalCluster, log_dir: Path) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.started: list[Operator] = []

    def start(self, namespaces: list[str], *, extra: list[str] | None = None, wait: bool = True) -> Operator:
        op = Operator(self.cluster, namespaces, self.log_dir, extra)
        time.sleep(0.002)  # distinct log file names (milliseconds)
        self.started.append(op.start(wait=wait))
        return op

    def start_as(self, namespaces: list[str], kubeconfig: Path) -> Operator:
        """An operator whose only credentials are ``kubeconfig`` (a ServiceAccount token): no admin fallback."""
        op = Operator(self.cluster, namespaces, self.log_dir, kubeconfig=kubeconfig)
        self.started.append(op.start())
        return op

    def stop_all(self) -> None:
        for op in self.started:
            rc = op.stop()
            print(f"operator exit code {rc}; log: {op.log_path}")


# --------------------------------------------------------------------------------------------- checks


KUBE_ERROR = re.compile(r" failed, retrying in \d+s: (?:\d+ writes failed|\d{1,3} [A-Za-z]+: )")


def unexpected_log_lines(log: str) -> list[str]:
    """Lines of an operator log that no fault should ever cause: tracebacks and reconcile bugs.

    A reconcile that failed because the API server refused or could not take a write (a ``KubeError``:
    "<status> <reason>: ...", or "<n> writes failed") is retried by design; any other exception escaping
    a reconcile is a bug.
    """
    out = []
    for line in log.splitlines():
        if "Traceback" in line or (
            "reconcile of " in line and " failed, retrying" in line and not KUBE_ERROR.search(line)
        ):
            out.append(line)
    return out


def convergence_problems(kube: Kube, ns: str, name: str, *, ranks: int) -> list[str]:
    """Everything that keeps the group from being exactly its plan; empty when converged.

    Exactly the planned pods (no more, none terminating), unique DP ranks 0..ranks-1, every pod and Service
    owned by this ParallelDeployment (controller reference), every pod of the current group generation and
    template, no other wideep pod in the namespace (no orphans), status Ready "n/n" for this generation.
    """
    obj = kube.get_pdep(ns, name)
    if obj is None:
        return [f"{ns}/{name} does not exist"]
    problems: list[str] = []
    st = obj.get("status") or {}
    uid = obj["metadata"]["uid"]
    if st.get("observedGeneration") != obj["metadata"]["generation"]:
        problems.append(
            f"observedGeneration {st.get('observedGeneration')} != {obj['metadata']['generation']}"
        )
    if not kube.is_ready(ns, name):
        problems.append(f"not Ready: {kube.condition(ns, name, c.COND_READY)}")
    if st.get("ready") != f"{ranks}/{ranks}" or st.get("readyRanks") != ranks:
        problems.append(f"status.ready {st.get('ready')!r}, readyRanks {st.get('readyRanks')}")
    verdict = validate_object(obj)
    if verdict.obj is None:
        return [*problems, f"invalid: {verdict.errors}"]
    the_plan = plan(verdict.obj, group_generation=int(st.get("groupGeneration") or 1))
    want_names = {p.name for p in the_plan.pods}
    tpl = the_plan.template_hash[:HASH_LABEL_CHARS]
    all_pods = kube.cluster.api(
        "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={c.LABEL_MANAGED_BY}%3D{c.MANAGED_BY_VALUE}"
    )["items"]
    mine = [p for p in all_pods if (p["metadata"].get("labels") or {}).get(c.LABEL_DEPLOYMENT) == name]
    others = [p for p in all_pods if p not in mine]
    orphans = [
        p["metadata"]["name"]
        for p in others
        if not any(r.get("controller") for r in p["metadata"].get("ownerReferences") or [])
    ]
    if orphans:
        problems.append(f"{len(orphans)} wideep pods without a controller: {orphans[:5]}")
    terminating = [p["metadata"]["name"] for p in mine if p["metadata"].get("deletionTimestamp")]
    if terminating:
        problems.append(f"{len(terminating)} pods still terminating")
    live = [p for p in mine if not p["metadata"].get("deletionTimestamp")]
    if len(live) != len(want_names) or {p["metadata"]["name"] for p in live} != want_names:
        problems.append(f"{len(live)} live pods, {len(want_names)} planned")
    dp_ranks = sorted(int(p["metadata"]["labels"].get(c.LABEL_DP_RANK, -1)) for p in live)
    want_ranks = sorted(p.dp_ranks[0] for p in the_plan.pods)
    if dp_ranks != want_ranks:
        dupes = sorted({r for r in dp_ranks if dp_ranks.count(r) > 1})
        problems.append(f"dp ranks differ from the plan (duplicates: {dupes[:10]})")
    gen = str(st.get("groupGeneration"))
    for p in live:
        meta = p["metadata"]
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
        if len(refs) != 1 or refs[0]["uid"] != uid:
            problems.append(f"pod {meta['name']} not owned by {name} ({uid})")
            break
        if (meta.get("annotations") or {}).get(c.ANNOTATION_GROUP_GENERATION) != gen:
            problems.append(
                f"pod {meta['name']} of group generation {meta['annotations'].get(c.ANNOTATION_GROUP_GENERATION)}, status says {gen}"
            )
            break
        if meta["labels"].get(c.LABEL_TEMPLATE_HASH) != tpl:
            problems.append(f"pod {meta['name']} of an old template")
            break
    services = kube.services(ns, name)
    want_svcs = {s["metadata"]["name"] for s in the_plan.services}
    live_svcs = {s["metadata"]["name"] for s in services if not s["metadata"].get("deletionTimestamp")}
    if live_svcs != want_svcs:
        problems.append(f"services: {len(live_svcs)} live, {len(want_svcs)} planned")
    if any(
        not any(r.get("uid") == uid for r in s["metadata"].get("ownerReferences") or []) for s in services
    ):
        problems.append("a Service is not owned by the ParallelDeployment")
    return problems


def wait_converged(
    kube: Kube,
    ns: str,
    name: str,
    *,
    ranks: int,
    timeout: float,
    alive: Callable[[], Any] | None = None,
    expect: Callable[[dict[str, Any]], list[str]] | None = None,
) -> float:
    """Wait until ``convergence_problems`` is empty (and ``expect(the object)``, when given, finds nothing
    wrong with the gang state); returns the seconds it took. ``alive`` (an operator's ``alive``) is called on
    every poll, so an operator that died fails the wait at once with its log."""
    t0 = time.monotonic()
    last: list[str] = []
    while time.monotonic() - t0 < timeout:
        if alive is not None:
            alive()
        last = convergence_problems(kube, ns, name, ranks=ranks)
        if not last and expect is not None:
            obj = kube.get_pdep(ns, name)
            last = expect(obj) if obj is not None else ["gone"]
        if not last:
            return time.monotonic() - t0
        time.sleep(0.3)
    pods = kube.pods(ns, name)
    ready = sum(
        1
        for p in pods
        if any(
            cd["type"] == "Ready" and cd["status"] == "True"
            for cd in (p.get("status") or {}).get("conditions", [])
        )
    )
    phases = sorted({str((p.get("status") or {}).get("phase")) for p in pods})
    bound = sum(1 for p in pods if p["spec"].get("nodeName"))
    raise AssertionError(
        f"{ns}/{name} did not converge in {timeout:.0f}s: {last}; the API server has {len(pods)} pods "
        f"({bound} bound to a node, {ready} Ready, phases {phases})"
    )
