"""The generated CRD: its shape (pure), and its verdicts on a real API server (``cluster``).

The cluster tests send every case of ``tests.support.rule_cases.CASES`` with ``kubectl apply --server-side
--dry-run=server`` and hold the API server to the verdict pydantic gives (same accept/refuse; a refusal names
the field path and, for a cross-field rule, the rule id): the first two of the "same verdict in three
places".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.cluster import LocalCluster
from tests.support.apiserver import DryRunClient
from tests.support.builders import (
    example_paths,
    external_lb,
    hybrid_lb,
    internal_lb,
    parallel_deployment,
    torchrun,
    wide_ep,
)
from tests.support.rule_cases import CASE_IDS, CASES, Case, check_pydantic
from tests.support.waits import wait_until
from wideep.api import constants, rules
from wideep.api.crd import crd, spec_schema
from wideep.api.generate import ROOT, api_md
from wideep.api.models import EplbConfig, ParallelConfig
from wideep.api.validate import validate_object

ALLOWED_SCHEMA_KEYS = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def _version() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    return dict(version)


def _root() -> dict[str, Any]:
    return dict(_version()["schema"]["openAPIV3Schema"])


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if "items" in node:
        out += _walk(node["items"], path + "[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], path + "{}")
    return out


def _at(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in dotted.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


# ---------------------------------------------------------------------------------------------
# Pure: the CRD's shape


def test_crd_names_and_scope() -> None:
    obj = crd()
    assert obj["metadata"]["name"] == "paralleldeployments.wideep.dev"
    spec = obj["spec"]
    assert spec["group"] == "wideep.dev"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["kind"] == "ParallelDeployment"
    assert names["plural"] == "paralleldeployments"
    assert names["shortNames"] == ["pdep"]
    assert set(names["categories"]) >= {"wideep"}
    version = _version()
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]


def test_crd_subresources() -> None:
    sub = _version()["subresources"]
    assert sub["status"] == {}
    assert sub["scale"]["specReplicasPath"] == ".spec.parallelConfig.dataParallelSize"
    assert sub["scale"]["statusReplicasPath"] == ".status.replicas"
    assert sub["scale"]["labelSelectorPath"] == ".status.selector"
    # the paths exist in the schema
    root = _root()
    assert _at(root, "spec.parallelConfig.dataParallelSize") is not None
    assert _at(root, "status.replicas") is not None
    assert _at(root, "status.selector") is not None


def test_crd_printer_columns() -> None:
    cols = {c["name"]: c for c in _version()["additionalPrinterColumns"]}
    for name in ("DP", "TP", "EP", "Ranks", "Ready", "Age"):
        assert name in cols, name
    assert cols["DP"]["jsonPath"] == ".spec.parallelConfig.dataParallelSize"
    assert cols["TP"]["jsonPath"] == ".spec.parallelConfig.tensorParallelSize"
    assert cols["EP"]["jsonPath"] == ".spec.parallelConfig.enableExpertParallel"
    assert cols["Age"]["type"] == "date"


def test_schema_is_structural() -> None:
    """Only keywords a structural schema allows; every node typed (unless it preserves unknown fields)."""
    for path, node in _walk(_root()):
        unknown = set(node) - ALLOWED_SCHEMA_KEYS
        assert not unknown, f"{path or '<root>'}: {unknown}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path or "<root>"
        if node.get("type") == "integer":
            assert node.get("format") == "int64", path


def test_spec_fields_have_one_line_descriptions() -> None:
    for path, node in _walk(spec_schema(), "spec"):
        if path.endswith(("[]", "{}")):
            continue
        desc = node.get("description", "")
        assert desc.strip(), f"{path} has no description"
        assert "\n" not in desc, f"{path}: description spans lines: {desc!r}"
        assert "  " not in desc, f"{path}: description has runs of spaces: {desc!r}"


def test_defaults_match_the_models() -> None:
    """The API server applies the CRD's defaults; they are the pydantic models' defaults."""
    pc = _at(_root(), "spec.parallelConfig")
    assert pc is not None
    for name, info in ParallelConfig.model_fields.items():
        alias = info.alias or name
        node = pc["properties"][alias]
        default = info.get_default(call_default_factory=True)
        if default is None:
            assert "default" not in node, alias
        elif isinstance(default, EplbConfig):
            assert node["default"] == default.model_dump(by_alias=True), alias
        else:
            assert node["default"] == default, alias


def test_every_rule_in_crd_once_at_its_scope() -> None:
    root = _root()
    spec = root["properties"]["spec"]
    pod = spec["properties"]["template"]["properties"]["spec"]
    scopes: dict[str, list[dict[str, Any]]] = {
        "root": [root],
        "spec": [spec],
        "parallelConfig": [spec["properties"]["parallelConfig"]],
        "container": [pod["properties"]["containers"]["items"], pod["properties"]["initContainers"]["items"]],
    }
    for rule in rules.ALL_RULES:
        for node in scopes[rule.scope]:
            found = [v for v in node.get("x-kubernetes-validations", []) if v["rule"] == rule.cel]
            assert len(found) == 1, rule.id
            (v,) = found
            assert v["message"].endswith(f"(rule {rule.id})")
            assert v["fieldPath"] == "." + rule.field
            assert _at(node, rule.field) is not None, f"{rule.id}: fieldPath {rule.field} not in the schema"
    total = sum(len(n.get("x-kubernetes-validations", [])) for _, n in _walk(root))
    assert total == len(rules.ALL_RULES) + len(rules.CONTAINER_RULES)  # container rules twice


def test_cel_reserved_args_cover_underscore_spellings() -> None:
    (rule,) = [r for r in rules.CONTAINER_RULES if r.id == "reserved-args"]
    for flag in ("--data_parallel", "--tensor_parallel_size", "--no_disable_custom_all_reduce", "--eplb_"):
        assert f"a.startsWith('{flag}')" in rule.cel


def test_api_md_tables_are_well_formed() -> None:
    text = api_md()
    in_table = False
    for line in text.splitlines():
        if line.startswith("|"):
            in_table = True
        elif in_table and line:
            raise AssertionError(f"a table row spans lines: {line!r}")
        else:
            in_table = False
        if line.startswith("| `"):
            assert line.endswith(" |"), line
            assert "\n..." not in line
    for rule in rules.ALL_RULES:
        assert f"| `{rule.id}` |" in text
    assert "| `spec.parallelConfig.enableEplb` | boolean | `false` |" in text


def test_committed_crd_is_current() -> None:
    committed = yaml.safe_load((ROOT / "crds" / f"{constants.CRD_NAME}.yaml").read_text())
    assert committed == crd(), "crds/ is stale: run `make generate`"


# ---------------------------------------------------------------------------------------------
# Cluster: the API server's verdicts


def kubectl_dry_run(cluster: LocalCluster, obj: dict[str, Any]) -> tuple[bool, str]:
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=wideep-api-tests",
        "-n",
        "default",
        "-f",
        "-",
        input=json.dumps(obj),
    )
    return proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_apiserver_verdict(pdep_crd: LocalCluster, case: Case) -> None:
    check_pydantic(case)  # the table itself holds for pydantic (test_rules), so a failure here is the CRD's
    accepted, stderr = kubectl_dry_run(pdep_crd, case.obj())
    if case.ok:
        assert accepted, f"{case.id}: the API server refused a valid object:\n{stderr}"
        return
    assert not accepted, f"{case.id}: the API server accepted an object pydantic refuses at {case.path}"
    assert case.path is not None
    assert case.path in stderr, f"{case.id}: {case.path} not named in:\n{stderr}"
    if case.rule != "schema":
        assert f"(rule {case.rule})" in stderr, f"{case.id}: rule {case.rule} not named in:\n{stderr}"
    for part in case.contains:
        assert part in stderr, f"{case.id}: {part!r} not in:\n{stderr}"


def test_apiserver_message_format(pdep_crd: LocalCluster) -> None:
    """A refusal reads `<field path>: Invalid value: <message> (rule <id>)`."""
    accepted, stderr = kubectl_dry_run(pdep_crd, external_lb(dp=1))
    assert not accepted
    assert (
        "spec.parallelConfig.dataParallelExternalLb: Invalid value: external LB needs dataParallelSize > 1"
        " (rule external-lb-needs-dp)" in stderr
    )


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_examples_accepted_by_apiserver(pdep_crd: LocalCluster, path: Path) -> None:
    assert validate_object(yaml.safe_load(path.read_text())).ok
    proc = pdep_crd.kubectl("apply", "--server-side", "--dry-run=server", "-n", "default", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    proc = pdep_crd.kubectl("create", "--dry-run=server", "-n", "default", "-f", str(path))
    assert proc.returncode == 0, proc.stderr


DEFAULTED = [
    ("default", parallel_deployment),
    ("external", external_lb),
    ("hybrid", hybrid_lb),
    ("internal", internal_lb),
    ("torchrun", torchrun),
    ("wide-ep", wide_ep),
]


@pytest.mark.parametrize(("name", "factory"), DEFAULTED, ids=[d[0] for d in DEFAULTED])
def test_apiserver_defaults_equal_pydantic_defaults(dry_run: DryRunClient, name: str, factory: Any) -> None:
    obj = factory()
    result = dry_run(obj)
    assert result.accepted, result.message
    stored = result.body["spec"]
    verdict = validate_object(obj)
    assert verdict.ok
    model = verdict.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    for key in (
        "vllmVersion",
        "parallelConfig",
        "serving",
        "network",
        "startup",
        "restartPolicy",
        "preflight",
    ):
        assert stored[key] == model[key], key


def test_example_defaults_equal_pydantic_defaults(dry_run: DryRunClient) -> None:
    for path in example_paths():
        obj = yaml.safe_load(path.read_text())
        result = dry_run(obj)
        assert result.accepted, result.message
        model = validate_object(obj).spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert result.body["spec"]["parallelConfig"] == model["parallelConfig"], path.name


def test_deprecated_fields_warned_at_admission(dry_run: DryRunClient) -> None:
    """The ValidatingAdmissionPolicy in Warn mode turns a deprecated field into an admission warning."""
    obj = parallel_deployment(
        "deprecated",
        parallel_config={
            "enableExpertParallel": True,
            "enableEplb": True,
            "dataParallelSize": 2,
            "numRedundantExperts": 16,
        },
    )
    result = wait_until(
        "the deprecation warning policy to be in force",
        lambda: (r := dry_run(obj)).warnings and r,
        timeout=60,
        interval=0.5,
    )
    assert result.accepted
    assert any("spec.parallelConfig.numRedundantExperts is deprecated" in w for w in result.warnings)
    # accepted, warned, forwarded: the stored object keeps the field; pydantic forwards it
    assert result.body["spec"]["parallelConfig"]["numRedundantExperts"] == 16
    assert not dry_run(parallel_deployment("plain")).warnings


def test_deprecated_field_warning_shown_by_kubectl(pdep_crd: LocalCluster) -> None:
    obj = parallel_deployment("deprecated", parallel_config={"eplbWindowSize": 10})
    stderr = wait_until(
        "kubectl to print the deprecation warning",
        lambda: _if_contains(kubectl_dry_run(pdep_crd, obj)[1], "deprecated"),
        timeout=60,
        interval=0.5,
    )
    assert stderr.startswith("Warning: ")
    assert "spec.parallelConfig.eplbWindowSize is deprecated" in stderr
    assert "spec.parallelConfig.eplbConfig.windowSize" in stderr


def _if_contains(text: str, part: str) -> str:
    return text if part in text else ""


def _explain(cluster: LocalCluster, path: str) -> str:
    proc = cluster.kubectl("explain", path)
    return " ".join(proc.stdout.split()) if proc.returncode == 0 else ""


def _phrase(description: str | None, words: int = 5) -> str:
    return " ".join((description or "").split()[:words])


def test_kubectl_explain_parallel_config(pdep_crd: LocalCluster) -> None:
    first = _phrase(ParallelConfig.model_fields["data_parallel_size_local"].description)
    assert first == "DP ranks hosted by one"
    text = wait_until(
        "kubectl explain to show the field descriptions",
        lambda: _if_contains(_explain(pdep_crd, "paralleldeployment.spec.parallelConfig"), first),
        timeout=90,
        interval=1,
    )
    assert "vLLM's parallel configuration" in text
    for name, info in ParallelConfig.model_fields.items():
        alias = info.alias or name
        assert alias in text, alias
        assert _phrase(info.description) in text, f"{alias}: {_phrase(info.description)!r}"
    # enums are shown with their allowed values
    assert "deepep_low_latency" in text


def test_kubectl_explain_eplb_config_by_short_name(pdep_crd: LocalCluster) -> None:
    phrase = _phrase(EplbConfig.model_fields["num_redundant_experts"].description)
    text = wait_until(
        "kubectl explain pdep.spec.parallelConfig.eplbConfig",
        lambda: _if_contains(_explain(pdep_crd, "pdep.spec.parallelConfig.eplbConfig"), phrase),
        timeout=90,
        interval=1,
    )
    for name, info in EplbConfig.model_fields.items():
        assert (info.alias or name) in text
        assert _phrase(info.description) in text
    field = _explain(pdep_crd, "pdep.spec.parallelConfig.eplbConfig.numRedundantExperts")
    assert re.search(r"numRedundantExperts\s*<integer>", field), field


def test_scale_subresource_sets_dp_and_is_validated(pdep_crd: LocalCluster, namespace: str) -> None:
    obj = external_lb("scaled", dp=4)
    proc = pdep_crd.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(obj))
    assert proc.returncode == 0, proc.stderr
    proc = pdep_crd.kubectl("scale", "-n", namespace, "pdep/scaled", "--replicas=8")
    assert proc.returncode == 0, proc.stderr
    proc = pdep_crd.kubectl(
        "get", "-n", namespace, "pdep/scaled", "-o", "jsonpath={.spec.parallelConfig.dataParallelSize}"
    )
    assert proc.stdout == "8"
    # scaling to DP=1 breaks external-lb-needs-dp: the CEL rules guard the scale subresource too
    proc = pdep_crd.kubectl("scale", "-n", namespace, "pdep/scaled", "--replicas=1")
    assert proc.returncode != 0
    assert "external-lb-needs-dp" in proc.stderr
    # printer columns
    proc = pdep_crd.kubectl("get", "-n", namespace, "pdep")
    header = proc.stdout.splitlines()[0].split()
    assert header[:4] == ["NAME", "DP", "TP", "EP"]
    assert {"RANKS", "READY", "AGE"} <= set(header)
    assert proc.stdout.splitlines()[1].split()[:4] == ["scaled", "8", "1", "true"]


def test_null_without_default(pdep_crd: LocalCluster, dry_run: DryRunClient) -> None:
    """``null`` for a field without a default: create (POST, client-side ``kubectl apply``/``create``) prunes it
    and accepts, as pydantic does; server-side apply refuses it ("must be of type integer"). The API server's
    own paths disagree here, so this case is kept out of the shared table."""
    obj = parallel_deployment(
        "nulls", parallel_config={"dataParallelSizeLocal": None, "all2allBackend": None}
    )
    assert validate_object(obj).ok
    result = dry_run(obj)
    assert result.accepted, result.message
    assert "dataParallelSizeLocal" not in result.body["spec"]["parallelConfig"]
    proc = pdep_crd.kubectl("create", "--dry-run=server", "-n", "default", "-f", "-", input=json.dumps(obj))
    assert proc.returncode == 0, proc.stderr
    accepted, stderr = kubectl_dry_run(pdep_crd, obj)
    assert not accepted
    assert "spec.parallelConfig.dataParallelSizeLocal" in stderr
