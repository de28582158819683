"""One verdict for a ParallelDeployment object: structural (pydantic) + cross-field rules.

Used by ``wideep validate``, the controller and the tests; the CRD's CEL carries the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from . import constants
from .derived import deprecation_warnings
from .models import Container, ParallelDeployment, ParallelDeploymentSpec
from .rules import (
    CONTAINER_RULES,
    PARALLEL_CONFIG_RULES,
    ROOT_RULES,
    SPEC_RULES,
    is_reserved_arg,
    is_reserved_env,
)


@dataclass(frozen=True)
class Issue:
    path: str
    message: str
    rule: str = "schema"

    def __str__(self) -> str:
        if self.rule == "schema":
            return f"{self.path}: {self.message}"
        return f"{self.path}: {self.message} (rule {self.rule})"


@dataclass
class Verdict:
    errors: list[Issue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    obj: ParallelDeployment | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def spec(self) -> ParallelDeploymentSpec:
        assert self.obj is not None, "no spec: the object is invalid"
        return self.obj.spec


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_issues(exc: ValidationError, prefix: str = "") -> list[Issue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = format_loc(loc)
        if prefix:
            path = prefix + ("." + path if path else "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        issues.append(Issue(path, msg, "schema"))
    return issues


def check_rules(spec: ParallelDeploymentSpec, name: str | None = None) -> list[Issue]:
    issues = []
    pc = spec.parallel_config
    for rule in PARALLEL_CONFIG_RULES:
        if not rule.check(pc):
            issues.append(Issue(f"spec.parallelConfig.{rule.field}", rule.message, rule.id))
    for rule in SPEC_RULES:
        if not rule.check(spec):
            issues.append(Issue(f"spec.{rule.field}", rule.message, rule.id))
    groups = (
        ("containers", spec.template.spec.containers),
        ("initContainers", spec.template.spec.init_containers),
    )
    for group_name, containers in groups:
        for i, c in enumerate(containers or []):
            for rule in CONTAINER_RULES:
                if not rule.check(c):
                    found = _offending(rule.id, c)
                    issues.append(
                        Issue(
                            f"spec.template.spec.{group_name}[{i}].{rule.field}",
                            f"{rule.message}; found {found}",
                            rule.id,
                        )
                    )
    if name is not None:
        for rule in ROOT_RULES:
            if not rule.check(name):
                issues.append(Issue(rule.field, rule.message, rule.id))
    return issues


def _offending(rule_id: str, c: Container) -> str:
    if rule_id == "reserved-args":
        return ", ".join(a for a in (c.args or []) if is_reserved_arg(a))
    return ", ".join(e.name for e in (c.env or []) if is_reserved_env(e.name))


def as_stored(value: Any) -> Any:
    """The spec as the API server validates it after decoding a client's request.

    Keys whose value is null are dropped (the API server prunes nulls of non-nullable fields before
    defaulting, so ``dataParallelSize: null`` means unset), and integral floats become ints (kubectl
    sends YAML's ``2.0`` as JSON ``2``). Everything else is then validated strictly: ``"2"`` for an
    integer or ``"true"`` for a boolean is refused, as the API server refuses it.
    """
    if isinstance(value, dict):
        return {k: as_stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [as_stored(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def validate_object(obj: dict[str, Any]) -> Verdict:
    """Validate a whole ParallelDeployment object (as a dict, like the API server stores it)."""
    verdict = Verdict()
    if obj.get("apiVersion") != constants.API_VERSION or obj.get("kind") != constants.KIND:
        verdict.errors.append(
            Issue(
                "apiVersion",
                f"expected apiVersion {constants.API_VERSION} and kind {constants.KIND}",
                "schema",
            )
        )
        return verdict
    if not isinstance(obj.get("spec"), dict):
        verdict.errors.append(Issue("spec", "required field is missing"))
        return verdict
    try:
        spec = ParallelDeploymentSpec.model_validate(as_stored(obj["spec"]), strict=True)
    except ValidationError as exc:
        verdict.errors.extend(_pydantic_issues(exc, "spec"))
        return verdict
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    verdict.errors.extend(check_rules(spec, name if isinstance(name, str) else None))
    if not isinstance(name, str) or not name:
        verdict.errors.append(Issue("metadata.name", "required field is missing"))
    verdict.warnings.extend(deprecation_warnings(spec.parallel_config))
    if not verdict.errors:
        verdict.obj = ParallelDeployment.model_validate(
            {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, "spec": spec}
        )
    return verdict


def validate_spec(spec_dict: dict[str, Any], name: str = "x") -> Verdict:
    return validate_object(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {"name": name},
            "spec": spec_dict,
        }
    )
