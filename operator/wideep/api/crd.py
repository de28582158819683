"""Generate the CustomResourceDefinition from the pydantic models and the rules.

pydantic's JSON schema is turned into a Kubernetes structural schema: ``$ref`` inlined,
``Optional`` dropped to "not required", open models marked
``x-kubernetes-preserve-unknown-fields``, sub-objects given ``default: {}`` so the API
server applies nested defaults, and the CEL rules attached where their scope lives.
"""

from __future__ import annotations

from typing import Any

from . import constants
from .models import ParallelDeploymentSpec, ParallelDeploymentStatus
from .rules import CONTAINER_RULES, PARALLEL_CONFIG_RULES, ROOT_RULES, SPEC_RULES, Rule

_DROP = {"title", "deprecated", "$defs"}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        merged = dict(defs[name])
        merged.update({k: v for k, v in node.items() if k != "$ref"})
        return _resolve(merged, defs)
    return node


def _defaults_of(schema: dict[str, Any]) -> dict[str, Any]:
    """The fully defaulted value of an object schema: the API server validates a default with CEL as is."""
    out: dict[str, Any] = {}
    for name, sub in schema.get("properties", {}).items():
        if "default" in sub:
            out[name] = sub["default"]
    return out


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']}")
        inner = _convert(options[0], defs)
        if node.get("description"):
            inner["description"] = " ".join(str(node["description"]).split())
        if node.get("default") is not None:
            inner["default"] = node["default"]
        return inner
    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = " ".join(str(node["description"]).split())
    if "const" in node:
        out["type"] = "string"
        out["enum"] = [node["const"]]
    typ = node.get("type")
    if typ is not None:
        out["type"] = typ
    for key in ("enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    if "default" in node and node["default"] is not None:
        out["default"] = node["default"]
    if typ == "integer":
        out["format"] = "int64"
    if typ == "array":
        out["items"] = _convert(node["items"], defs)
    if typ == "object":
        props = node.get("properties")
        if props:
            required = set(node.get("required", []))
            out["properties"] = {}
            for name, sub in props.items():
                conv = _convert(sub, defs)
                if (
                    name not in required
                    and conv.get("type") == "object"
                    and "properties" in conv
                    and "default" not in conv
                    and not conv.get("required")
                ):
                    conv["default"] = _defaults_of(conv)
                out["properties"][name] = conv
            if required:
                out["required"] = sorted(required)
        addl = node.get("additionalProperties")
        if isinstance(addl, dict):
            out["additionalProperties"] = _convert(addl, defs)
        if node.get("x-kubernetes-preserve-unknown-fields"):
            out["x-kubernetes-preserve-unknown-fields"] = True
    for key in node:
        if key.startswith("x-kubernetes-") and key not in out:
            out[key] = node[key]
    return {k: v for k, v in out.items() if k not in _DROP}


def _cel(rule: Rule) -> dict[str, Any]:
    return {
        "rule": rule.cel,
        "message": f"{rule.message} (rule {rule.id})",
        "reason": "FieldValueInvalid",
        "fieldPath": "." + rule.field,
    }


def spec_schema() -> dict[str, Any]:
    raw = ParallelDeploymentSpec.model_json_schema(by_alias=True, mode="validation")
    schema = _convert(raw, raw.get("$defs", {}))
    schema["description"] = "Desired state of a vLLM data/expert-parallel group."
    pc = schema["properties"]["parallelConfig"]
    pc["x-kubernetes-validations"] = [_cel(r) for r in PARALLEL_CONFIG_RULES]
    schema["x-kubernetes-validations"] = [_cel(r) for r in SPEC_RULES]
    pod_spec = schema["properties"]["template"]["properties"]["spec"]
    for key in ("containers", "initContainers"):
        pod_spec["properties"][key]["items"]["x-kubernetes-validations"] = [_cel(r) for r in CONTAINER_RULES]
    return schema


def status_schema() -> dict[str, Any]:
    raw = ParallelDeploymentStatus.model_json_schema(by_alias=True, mode="validation")
    schema = _convert(raw, raw.get("$defs", {}))
    schema["description"] = "Observed state, written by the operator."
    conds = schema["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    conds.pop("default", None)
    schema["properties"]["ranks"].pop("default", None)
    return schema


def _cond_column(cond: str, field: str, name: str, priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{cond}")].{field}',
    }
    if priority:
        col["priority"] = priority
    return col


def crd() -> dict[str, Any]:
    pc = ".spec.parallelConfig"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": constants.CRD_NAME,
            "labels": {"app.kubernetes.io/name": "wideep", "app.kubernetes.io/part-of": "wideep"},
        },
        "spec": {
            "group": constants.GROUP,
            "names": {
                "kind": constants.KIND,
                "listKind": constants.KIND + "List",
                "plural": constants.PLURAL,
                "singular": constants.SINGULAR,
                "shortNames": list(constants.SHORT_NAMES),
                "categories": list(constants.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": f"{pc}.dataParallelSize",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "DP", "type": "integer", "jsonPath": f"{pc}.dataParallelSize"},
                        {"name": "TP", "type": "integer", "jsonPath": f"{pc}.tensorParallelSize"},
                        {"name": "EP", "type": "boolean", "jsonPath": f"{pc}.enableExpertParallel"},
                        {"name": "Layout", "type": "string", "jsonPath": ".status.derived.layout"},
                        {
                            "name": "Ranks",
                            "type": "string",
                            "jsonPath": ".status.ready",
                            "description": "Ready DP ranks out of total",
                        },
                        _cond_column(constants.COND_READY, "status", "Ready"),
                        _cond_column(constants.COND_READY, "reason", "Reason"),
                        {
                            "name": "Restarts",
                            "type": "integer",
                            "jsonPath": ".status.groupRestarts",
                            "priority": 1,
                        },
                        _cond_column(constants.COND_READY, "message", "Message", priority=1),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A vLLM wide expert-parallel deployment: one data-parallel group of "
                            "rank pods, launched, watched and restarted as a gang by the wideep operator.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "API version: wideep.dev/v1alpha1.",
                                },
                                "kind": {"type": "string", "description": "ParallelDeployment."},
                                # name is declared so the root rule's fieldPath .metadata.name is valid.
                                "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "x-kubernetes-validations": [_cel(r) for r in ROOT_RULES],
                        }
                    },
                }
            ],
        },
    }
