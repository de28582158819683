"""Fuzz: random ParallelDeployments sent to the API server for real, into a namespace a running operator watches.

Inputs (hypothesis) are half the API tests' rule-boundary strategy (``tests.support.strategies.objects``:
mostly refused, one to several rules broken at a time) and half a strategy of specs the API server accepts
but that are odd for the operator: template labels and annotations that collide with the operator's own or
are not valid label values, pod-spec fields the operator overrides (restartPolicy, hostname, subdomain,
resources), ones that cannot work (a missing ServiceAccount or PriorityClass, a bad shm size), sidecars and
init containers, every layout, preflight, restart policies, names at the 48-character limit.

For every input:

* the API server's verdict equals ``validate_object``'s (zero disagreements);
* a refusal names a field, and one that pydantic names too;
* an accepted object, as stored, validates with the pydantic model, is stored with pydantic's defaults, and
  plans without error (``plan``); it then lives in the namespace until the operator has reconciled it
  (``status.observedGeneration``, ``Valid=True``), and is deleted as later inputs arrive (16 alive at once).

Meanwhile a sentinel group in the same namespace must stay Ready, and a template label change made to it
halfway through must reach its pods: the operator never stops reconciling the others, and never crashes.
Accepted objects whose pods the API server then refuses are counted and reported (the operator must say so
in ``Progressing``); they are no failure of this test.

``WIDEEP_FUZZ_INPUTS`` (default 1000); ``WIDEEP_FUZZ_MAX_LIVE_PODS`` (default 256): an accepted object that
plans more pods than this is sent with ``dryRun=All`` instead (verdict compared, planned, not run).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from devcluster.cluster import LocalCluster
from tests.support.apiserver import Connection, DryRun, apiserver_paths
from tests.support.builders import (
    external_lb,
    hybrid_lb,
    internal_lb,
    parallel_deployment,
    pdep,
    set_path,
    torchrun,
    wide_ep,
)
from tests.support.kube import API, Kube
from tests.support.reliability import Operators, percentiles, report, unexpected_log_lines
from tests.support.strategies import objects
from tests.support.waits import wait_until
from wideep.api import constants as c
from wideep.api.validate import validate_object
from wideep.planning.planner import plan

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

INPUTS = int(os.environ.get("WIDEEP_FUZZ_INPUTS", "1000"))
MAX_LIVE_PODS = int(os.environ.get("WIDEEP_FUZZ_MAX_LIVE_PODS", "256"))
LIVE = 16
RECONCILE_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------- inputs

LABEL_KEYS = (
    "team",
    "app",
    c.LABEL_DEPLOYMENT,
    c.LABEL_DP_RANK,
    c.LABEL_POD_INDEX,
    c.LABEL_MANAGED_BY,
    c.LABEL_TEMPLATE_HASH,
    "example.com/tier",
    "bad key!",
)
LABEL_VALUES = ("a", "other", "7", "", "has space", "x" * 64, "ok.value-1")
ANNOTATION_KEYS = (
    "note",
    c.ANNOTATION_GROUP_GENERATION,
    c.ANNOTATION_RANKS,
    c.ANNOTATION_RETRY,
    "example.com/x",
)


@st.composite
def odd_templates(draw: st.DrawFn, obj: dict[str, Any]) -> dict[str, Any]:
    tpl = obj["spec"]["template"]
    pod = tpl["spec"]
    ctr = pod["containers"][0]
    if draw(st.booleans()):
        tpl.setdefault("metadata", {})["labels"] = draw(
            st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=3)
        )
    if draw(st.booleans()):
        tpl.setdefault("metadata", {})["annotations"] = draw(
            st.dictionaries(
                st.sampled_from(ANNOTATION_KEYS), st.sampled_from(("1", "99", "x", "")), max_size=2
            )
        )
    extras: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "restartPolicy": st.sampled_from(["Always", "OnFailure"]),
                "hostname": st.just("someone-else"),
                "subdomain": st.just("elsewhere"),
                "terminationGracePeriodSeconds": st.sampled_from([0, 5]),
                "nodeSelector": st.sampled_from([{"pool": "nowhere"}, {"kubernetes.io/os": "linux"}]),
                "serviceAccountName": st.sampled_from(["default", "missing-sa"]),
                "priorityClassName": st.just("no-such-priority"),
                "hostNetwork": st.booleans(),
                "enableServiceLinks": st.just(True),
                "tolerations": st.just([{"operator": "Exists"}]),
                "volumes": st.just([{"name": "cache", "emptyDir": {}}]),
            },
        )
    )
    pod.update(extras)
    ctr_extras: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "resources": st.sampled_from(
                    [{"limits": {"nvidia.com/gpu": "3"}}, {"requests": {"cpu": "1", "memory": "1Gi"}}]
                ),
                "ports": st.sampled_from(
                    [[{"name": "web", "containerPort": 8000}], [{"name": "metrics", "containerPort": 9090}]]
                ),
                "command": st.just(["python", "-m", "vllm.entrypoints.openai.api_server"]),
                "env": st.just([{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
                "volumeMounts": st.just([{"name": "dshm", "mountPath": "/dev/shm"}]),
                "imagePullPolicy": st.sampled_from(["Never", "Sometimes"]),
            },
        )
    )
    ctr.update(ctr_extras)
    if draw(st.booleans()):
        pod["containers"].append({"name": "sidecar", "image": "busybox", "args": ["sleep", "inf"]})
        if draw(st.booleans()):
            obj["spec"]["serving"] = {"containerName": "sidecar"}
    if draw(st.booleans()):
        pod["initContainers"] = [{"name": "warm", "image": "busybox", "command": ["true"]}]
    return obj


@st.composite
def operator_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Accepted specs, mostly, with the odd parts the operator has to live with."""
    layout = draw(st.sampled_from(["single", "external", "hybrid", "internal", "torchrun", "wide"]))
    name = draw(st.sampled_from(["op", "op", "a" * 48]))
    dp = draw(st.sampled_from([2, 3, 4]))
    obj = {
        "single": lambda: parallel_deployment(name),
        "external": lambda: external_lb(name, dp=dp, tp=draw(st.sampled_from([1, 2]))),
        "hybrid": lambda: hybrid_lb(name, dp=4, local=2),
        "internal": lambda: internal_lb(name, dp=4, local=2),
        "torchrun": lambda: torchrun(name, dp=2, tp=2),
        "wide": lambda: wide_ep(name, dp=dp),
    }[layout]()
    spec = obj["spec"]
    obj = draw(odd_templates(obj))
    spec.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "vllmVersion": st.sampled_from(["0.11.0", "0.11.1"]),
                    "restartPolicy": st.sampled_from(
                        [
                            {"policy": "Never"},
                            {"maxRestarts": 0},
                            {"backoffSeconds": 0, "maxBackoffSeconds": 0},
                        ]
                    ),
                    "network": st.sampled_from(
                        [
                            {"socketInterface": "ib0", "shmSizeLimit": "16Gi"},
                            {"shmSizeLimit": "bogus"},
                            {"clusterDomain": "corp.example"},
                        ]
                    ),
                    "startup": st.sampled_from([{"timeoutSeconds": 60, "readinessPath": "/v1/models"}]),
                    "preflight": st.sampled_from(
                        [{"enabled": True}, {"enabled": True, "image": "wideep:dev"}]
                    ),
                },
            )
        )
    )
    if draw(st.booleans()):
        obj["metadata"]["labels"] = {"team": "x"}
        obj["metadata"]["annotations"] = {c.ANNOTATION_RETRY: "1"}
    return obj


def unique_name(name: str, i: int) -> str:
    """A unique name of the same validity: long names keep their length (the 48-character boundary), short
    ones get a suffix (an invalid character or leading digit stays)."""
    suffix = f"-{i:04d}"
    if len(name) > 40:
        return name[: len(name) - len(suffix)] + suffix
    return name + suffix


# --------------------------------------------------------------------------------------------- test


@pytest.mark.slow
def test_fuzzed_specs_agree_and_never_stop_the_operator(
    cluster: LocalCluster, kube: Kube, operators: Operators, namespace: str
) -> None:
    op = operators.start([namespace])
    sentinel = pdep("sentinel", namespace, dp=2)
    assert kube.apply(sentinel).returncode == 0
    kube.wait_ready(namespace, "sentinel")
    sentinel_uid = kube.get_pdep(namespace, "sentinel")["metadata"]["uid"]  # type: ignore[index]

    api = Connection(cluster)
    collection = f"{API}/namespaces/{namespace}/{c.PLURAL}"
    numbers = itertools.count()
    stats: collections.Counter[str] = collections.Counter()
    pods_refused: collections.Counter[str] = collections.Counter()
    to_status_ms: list[float] = []
    live: collections.deque[tuple[str, float]] = collections.deque()
    t_start = time.monotonic()

    def retire(name: str, created: float) -> None:
        """Wait until the operator has reconciled ``name`` (status for its generation, Valid=True), then delete."""
        seen: dict[str, Any] = {}

        def reconciled() -> bool:
            status, obj = api("GET", f"{collection}/{name}")
            assert status == 200, (status, obj.get("message"))
            st_ = obj.get("status") or {}
            seen.update(st_)
            return st_.get("observedGeneration") == obj["metadata"]["generation"]

        wait_until(f"the operator to reconcile {name}", reconciled, timeout=RECONCILE_TIMEOUT, interval=0.05)
        conds = {cd["type"]: cd for cd in seen.get("conditions", [])}
        assert conds[c.COND_VALID]["status"] == "True", f"{name}: accepted but Valid={conds[c.COND_VALID]}"
        to_status_ms.append((time.monotonic() - created) * 1000)
        progressing = conds.get(c.COND_PROGRESSING, {}).get("message", "")
        if "refused planned writes" in progressing:
            pods_refused[_refusal_reason(progressing)] += 1
        status, answer = api("DELETE", f"{collection}/{name}")
        assert status in (200, 202, 404), answer

    @settings(
        max_examples=INPUTS,
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(obj=st.one_of(objects(), operator_objects()))
    def check(obj: dict[str, Any]) -> None:
        i = next(numbers)
        if i == INPUTS // 2:  # halfway: the sentinel must still be reconciled
            proc = kube.apply(_with_label(sentinel, "halfway"))
            assert proc.returncode == 0, proc.stderr
        if i % 50 == 0:
            op.alive()
        obj["metadata"]["name"] = unique_name(str(obj["metadata"]["name"]), i)
        obj["metadata"]["namespace"] = namespace
        verdict = validate_object(obj)
        dry = False
        if verdict.ok:
            assert verdict.obj is not None
            dry = len(plan(verdict.obj).pods) > MAX_LIVE_PODS
        status, body = api(
            "POST", collection + "?fieldValidation=Strict" + ("&dryRun=All" if dry else ""), obj
        )
        result = DryRun(status, body, [])
        mine = sorted(f"{e.path}: {e.message} [{e.rule}]" for e in verdict.errors)
        detail = f"\nobject: {json.dumps(obj)}\npydantic: {mine or 'valid'}\nAPI server ({status}): {result.message}"
        assert status in (201, 400, 422), "unexpected answer" + detail
        assert verdict.ok == result.accepted, "the API server and the model disagree" + detail
        if not result.accepted:
            named = apiserver_paths(result)
            assert named, "refused without naming a field" + detail
            assert {e.path for e in verdict.errors} & named, "no field named by both" + detail
            stats["refused"] += 1
            return
        stored = validate_object(body)
        assert stored.ok and stored.obj is not None, f"stored object invalid: {stored.errors}" + detail
        model = stored.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert body["spec"]["parallelConfig"] == model["parallelConfig"], "defaults differ" + detail
        planned = plan(stored.obj)
        stats["pods planned"] += len(planned.pods)
        if dry:
            stats["accepted, too big to run (dry run)"] += 1
            return
        stats["accepted and run"] += 1
        live.append((obj["metadata"]["name"], time.monotonic()))
        while len(live) > LIVE:
            retire(*live.popleft())

    try:
        check()
        while live:
            retire(*live.popleft())
    finally:
        api.close()
    fuzz_s = time.monotonic() - t_start

    if next(numbers) <= INPUTS // 2:  # fewer inputs than planned reached halfway: do it now
        assert kube.apply(_with_label(sentinel, "halfway")).returncode == 0
    op.alive()
    wait_until(
        "the sentinel's pods relabelled and Ready",
        lambda: (
            kube.is_ready(namespace, "sentinel")
            and all(
                p["metadata"]["labels"].get("fuzz") == "halfway"
                for p in kube.live_pods(namespace, "sentinel")
            )
        ),
        timeout=60,
    )
    sentinel_now = kube.get_pdep(namespace, "sentinel")
    assert sentinel_now is not None and sentinel_now["metadata"]["uid"] == sentinel_uid
    assert sentinel_now["status"]["groupRestarts"] == 0
    metrics = op.metrics()
    inputs = stats["refused"] + stats["accepted and run"] + stats["accepted, too big to run (dry run)"]
    report(
        "fuzz",
        inputs_tried=inputs,
        verdicts=dict(stats),
        disagreements=0,
        operator_crashes=0,
        accepted_run_with_pods_refused_by_api=dict(pods_refused),
        accepted_to_first_status_ms={k: round(v) for k, v in percentiles(to_status_ms).items()},
        reconciles=int(metrics.get("wideep_reconcile_duration_seconds_count", 0)),
        reconcile_errors=metrics.get("wideep_reconcile_errors_total", 0),
        sentinel="Ready, relabelled halfway, never restarted",
        seconds=round(fuzz_s),
    )
    assert stats["accepted and run"] >= inputs // 10 and stats["refused"] >= inputs // 10, stats
    bad = unexpected_log_lines(op.log())
    assert not bad, "\n".join(bad[:20])
    # Leave no load behind: the garbage collector needs minutes for hundreds of fuzzed pods on 2 cores.
    for path in (f"{API}/namespaces/{namespace}/{c.PLURAL}", f"/api/v1/namespaces/{namespace}/pods"):
        kube.cluster.request("DELETE", path, None)


def _with_label(obj: dict[str, Any], value: str) -> dict[str, Any]:
    out = json.loads(json.dumps(obj))
    out["spec"]["template"]["metadata"]["labels"]["fuzz"] = value
    return out


def _refusal_reason(message: str) -> str:
    """The API server's reason for refusing a planned pod or Service, without object names."""
    detail = message.split("retrying: ", 1)[-1].split(" (+", 1)[0]
    kind = detail.split(" ", 1)[0]
    if " is invalid: " in detail:
        reason = detail.split(" is invalid: ", 1)[1]
    elif " is forbidden: " in detail:
        reason = "forbidden: " + detail.split(" is forbidden: ", 1)[1]
    else:
        reason = detail.rsplit(": ", 1)[-1]
    reason = re.sub(r"\b[a-z0-9]([-a-z0-9]*[a-z0-9])?-\d{4}(-\d+)?\b", "<name>", reason)
    return f"{kind}: {reason[:110]}"


# Fields the operator itself turns into pod and Service fields (not the user's pod template, which the API
# server validates only when the pods are created): every value the API server accepts in the
# ParallelDeployment must give pods and Services the API server accepts too.
OWNED_FIELD_CASES = [
    ("spec.network.shmSizeLimit", "16Gi"),
    ("spec.network.shmSizeLimit", "1.5Gi"),
    ("spec.network.shmSizeLimit", "bogus"),
    ("spec.network.shmSizeLimit", "16 GiB"),
    ("spec.network.shmSizeLimit", "-1Gi"),
    ("spec.network.socketInterface", "ib0.100"),
    ("spec.network.clusterDomain", "corp.example"),
    ("spec.serving.port", 1),
    ("spec.serving.port", 65535),
    ("spec.serving.apiServerCount", 256),
    ("spec.startup.timeoutSeconds", 86400),
    ("spec.preflight", {"enabled": True, "image": "registry.example/wideep:0.1.0", "timeoutSeconds": 10}),
    ("spec.parallelConfig.dataParallelRpcPort", 65535),
    ("metadata.name", "a" * 48),
]


@pytest.mark.parametrize(
    ("path", "value"), OWNED_FIELD_CASES, ids=[f"{p.rsplit('.', 1)[-1]}={v}" for p, v in OWNED_FIELD_CASES]
)
def test_accepted_operator_fields_make_pods_the_api_server_accepts(
    cluster: LocalCluster, crd: None, namespace: str, path: str, value: Any
) -> None:
    obj = set_path(external_lb("owned", dp=2), path, value)
    obj["metadata"]["namespace"] = namespace
    status, body = cluster.request(
        "POST", f"{API}/namespaces/{namespace}/{c.PLURAL}?dryRun=All&fieldValidation=Strict", obj
    )
    verdict = validate_object(obj)
    assert (200 <= status < 300) == verdict.ok, (status, body.get("message"), verdict.errors)
    if not verdict.ok:
        return  # refused by both: agreement is all there is to check
    body["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
    stored = validate_object(body)
    assert stored.obj is not None
    group = plan(stored.obj)
    refused = []
    for planned in [*group.services[:3], group.pods[0].body, group.pods[-1].body]:
        child = json.loads(json.dumps(planned))
        child["metadata"].pop("ownerReferences", None)  # the dry-run owner has no real uid
        kind = "pods" if child["kind"] == "Pod" else "services"
        code, answer = cluster.request("POST", f"/api/v1/namespaces/{namespace}/{kind}?dryRun=All", child)
        if not 200 <= code < 300:
            refused.append(f"{child['kind']} {child['metadata']['name']}: {answer.get('message')}")
    assert not refused, (
        f"{path}={value!r} is accepted in a ParallelDeployment (API server and model agree), but the API server "
        f"refuses what the operator makes of it, so the group can never start:\n" + "\n".join(refused)
    )
