"""Table tests of the ParallelDeployment verdict in pydantic (``validate_object``).

The table is ``tests.support.rule_cases.CASES``; ``test_crd.py`` sends the same table to a real API server,
so the CEL in the CRD is held to the same verdicts.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.support.builders import (
    example_paths,
    external_lb,
    hybrid_lb,
    internal_lb,
    parallel_deployment,
    torchrun,
    wide_ep,
)
from tests.support.rule_cases import (
    BOUND_CASES,
    CASE_IDS,
    CASES,
    PC,
    REFUSED_ARGS,
    Case,
    check_pydantic,
    describe,
)
from wideep.api import derived, rules
from wideep.api.crd import spec_schema
from wideep.api.models import ALL2ALL_BACKENDS, DEFAULT_ALL2ALL_BACKEND, ParallelConfig
from wideep.api.validate import validate_object, validate_spec

# ---------------------------------------------------------------------------------------------
# Tests


def test_case_ids_unique() -> None:
    assert len(set(CASE_IDS)) == len(CASE_IDS), [i for i in CASE_IDS if CASE_IDS.count(i) > 1]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_verdict(case: Case) -> None:
    check_pydantic(case)


def test_every_rule_has_both_sides() -> None:
    """Every rule of ALL_RULES is made to fail by some case, and passes in a case of its own family."""
    failing = {c.rule for c in CASES if not c.ok}
    passing = {c.id.split("/")[0] for c in CASES if c.ok}
    for rule in rules.ALL_RULES:
        assert rule.id in failing, f"no table case makes rule {rule.id} fail"
        assert rule.id in passing, f"no table case shows rule {rule.id} passing"


@pytest.mark.parametrize("rule", rules.ALL_RULES, ids=[r.id for r in rules.ALL_RULES])
def test_rule_predicate_fails_alone(rule: rules.Rule) -> None:
    """The rule's own predicate (not just some other rule or the schema) refuses its failing cases."""
    cases = [c for c in CASES if c.rule == rule.id]
    assert cases
    for case in cases:
        verdict = validate_object(case.obj())
        assert any(e.rule == rule.id for e in verdict.errors), case.id


def test_bound_cases_cover_every_bound() -> None:
    """Both sides of every minimum/maximum/length/items bound of the spec schema are in the table."""
    ids = set(CASE_IDS)
    pc_fields = spec_schema()["properties"]["parallelConfig"]["properties"]
    for name, sub in pc_fields.items():
        p = PC + name
        if "minimum" in sub:
            assert f"bound/{p}={sub['minimum']}" in ids
            assert f"bound/{p}={sub['minimum'] - 1}" in ids
        if "maximum" in sub:
            assert f"bound/{p}={sub['maximum']}" in ids
            assert f"bound/{p}={sub['maximum'] + 1}" in ids
    # the ones the issue names
    for expected in (
        "bound/spec.parallelConfig.tensorParallelSize=0",
        "bound/spec.parallelConfig.tensorParallelSize=1",
        "bound/spec.parallelConfig.tensorParallelSize=1024",
        "bound/spec.parallelConfig.tensorParallelSize=1025",
        "bound/spec.parallelConfig.dataParallelRpcPort=0",
        "bound/spec.parallelConfig.dataParallelRpcPort=65536",
        "bound/spec.serving.port=1",
        "bound/spec.serving.port=65535",
        "bound/spec.parallelConfig.dataParallelSizeLocal=-1",
        "bound/spec.parallelConfig.dataParallelSizeLocal=0",
        "bound/spec.parallelConfig.numRedundantExperts=-1",
        "bound/spec.parallelConfig.numRedundantExperts=0",
        "bound/spec.parallelConfig.eplbConfig.numRedundantExperts=-1",
    ):
        assert expected in ids, expected
    assert len(BOUND_CASES) > 100


def test_unknown_enum_lists_allowed_values() -> None:
    obj = parallel_deployment(parallel_config={"all2allBackend": "deepep"})
    verdict = validate_object(obj)
    (issue,) = verdict.errors
    assert issue.path == "spec.parallelConfig.all2allBackend"
    for value in ALL2ALL_BACKENDS:
        assert f"'{value}'" in issue.message


@pytest.mark.parametrize("arg", REFUSED_ARGS)
def test_reserved_arg_named_in_message(arg: str) -> None:
    obj = parallel_deployment(containers=[{"name": "vllm", "args": ["m", "--trust-remote-code", arg]}])
    (issue,) = validate_object(obj).errors
    assert issue.path == "spec.template.spec.containers[0].args"
    assert issue.message.endswith(f"found {arg}")


def test_reserved_env_named_in_message() -> None:
    obj = parallel_deployment(
        containers=[{"name": "vllm", "env": [{"name": "RANK", "value": "0"}, {"name": "WIDEEP_A"}]}]
    )
    (issue,) = validate_object(obj).errors
    assert issue.path == "spec.template.spec.containers[0].env"
    assert issue.rule == "reserved-env"
    assert issue.message.endswith("found RANK, WIDEEP_A")


@pytest.mark.parametrize(
    ("arg", "spelled"),
    [
        ("--data_parallel_size=2", "--data-parallel-size=2"),
        ("--eplb_config.window_size=3", "--eplb-config.window_size=3"),
        ("--model=a_b", "--model=a_b"),
        ("-q_x", "-q_x"),
        ("my_model", "my_model"),
    ],
)
def test_vllm_flag_spelling(arg: str, spelled: str) -> None:
    assert rules.vllm_flag_spelling(arg) == spelled


def test_multiple_errors_all_reported() -> None:
    obj = parallel_deployment(
        parallel_config={"enableDbo": True, "tensorParallelSize": 3, "decodeContextParallelSize": 2},
        serving={"port": 29550},
    )
    rules_hit = {e.rule for e in validate_object(obj).errors}
    assert {"dbo-needs-deepep", "tp-divisible-by-dcp", "http-port-distinct"} <= rules_hit


def test_errors_format_as_path_colon_message() -> None:
    obj = parallel_deployment(parallel_config={"dataParallelSizeLocal": -1})
    (issue,) = validate_object(obj).errors
    assert str(issue).startswith("spec.parallelConfig.dataParallelSizeLocal: ")


def test_wrong_kind_refused() -> None:
    obj = parallel_deployment()
    obj["kind"] = "Deployment"
    verdict = validate_object(obj)
    assert [e.path for e in verdict.errors] == ["apiVersion"]


def test_missing_spec_and_name() -> None:
    obj = parallel_deployment()
    del obj["spec"]
    assert [e.path for e in validate_object(obj).errors] == ["spec"]
    obj = parallel_deployment()
    del obj["metadata"]["name"]
    assert "metadata.name" in [e.path for e in validate_object(obj).errors]


def test_valid_verdict_carries_the_model() -> None:
    verdict = validate_object(wide_ep())
    assert verdict.ok
    pc = verdict.spec.parallel_config
    assert pc.data_parallel_size == 16
    assert pc.eplb_config.num_redundant_experts == 32
    assert verdict.warnings == []


def test_null_means_default() -> None:
    verdict = validate_spec(
        {
            "parallelConfig": {"tensorParallelSize": None},
            "template": {"spec": {"containers": [{"name": "a"}]}},
        }
    )
    assert verdict.ok
    assert verdict.spec.parallel_config.tensor_parallel_size == 1


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_examples_valid(path: Any) -> None:
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        verdict = validate_object(doc)
        assert verdict.ok, describe(verdict)


# ---------------------------------------------------------------------------------------------
# Deprecated fields: accepted, warned about, forwarded into eplbConfig (vLLM's __post_init__).

DEPRECATED = [
    ("numRedundantExperts", 16, "eplbConfig.numRedundantExperts", "num_redundant_experts"),
    ("eplbWindowSize", 500, "eplbConfig.windowSize", "window_size"),
    ("eplbStepInterval", 100, "eplbConfig.stepInterval", "step_interval"),
    ("eplbLogBalancedness", True, "eplbConfig.logBalancedness", "log_balancedness"),
]


@pytest.mark.parametrize(("old", "value", "new", "attr"), DEPRECATED, ids=[d[0] for d in DEPRECATED])
def test_deprecated_field_warned_and_forwarded(old: str, value: Any, new: str, attr: str) -> None:
    obj = parallel_deployment(
        parallel_config={"enableExpertParallel": True, "enableEplb": True, "dataParallelSize": 2, old: value}
    )
    verdict = validate_object(obj)
    assert verdict.ok, describe(verdict)
    (warning,) = verdict.warnings
    assert f"spec.parallelConfig.{old} is deprecated" in warning
    assert f"spec.parallelConfig.{new}" in warning
    effective = derived.effective_eplb(verdict.spec.parallel_config)
    assert getattr(effective, attr) == value
    # the deprecated value wins over eplbConfig, as in vLLM
    set_eplb = parallel_deployment(
        parallel_config={
            "enableExpertParallel": True,
            "enableEplb": True,
            "dataParallelSize": 2,
            "eplbConfig": {
                "numRedundantExperts": 8,
                "windowSize": 7,
                "stepInterval": 9,
                "logBalancedness": False,
            },
            old: value,
        }
    )
    verdict = validate_object(set_eplb)
    assert getattr(derived.effective_eplb(verdict.spec.parallel_config), attr) == value


def test_no_deprecated_field_no_warning() -> None:
    for factory in (parallel_deployment, external_lb, hybrid_lb, internal_lb, torchrun, wide_ep):
        assert validate_object(factory()).warnings == []


def test_all_deprecated_fields_warn_each() -> None:
    pc = {"enableExpertParallel": True, "enableEplb": True, "dataParallelSize": 2}
    pc.update({old: value for old, value, _, _ in DEPRECATED})
    verdict = validate_object(parallel_deployment(parallel_config=pc))
    assert verdict.ok
    assert len(verdict.warnings) == len(DEPRECATED)


def test_round_robin_with_eplb_warns() -> None:
    pc = {"enableExpertParallel": True, "enableEplb": True, "dataParallelSize": 2}
    verdict = validate_object(
        parallel_deployment(parallel_config={**pc, "expertPlacementStrategy": "round_robin"})
    )
    assert verdict.ok
    assert any("round_robin has no effect" in w for w in verdict.warnings)


# ---------------------------------------------------------------------------------------------
# Config hash: vLLM's ParallelConfig.compute_hash (v0.11.1 parallel.py), the factor list written out.


def _sha(factors_repr: str) -> str:
    return hashlib.sha256(factors_repr.encode()).hexdigest()


def _hash_of(pc: dict[str, Any]) -> str:
    return derived.vllm_config_hash(ParallelConfig.model_validate(pc))


def test_config_hash_default() -> None:
    # [pp, tp, enable_expert_parallel, dp, all2all_backend (env default), enable_eplb]
    expected = _sha("[1, 1, False, 1, 'allgather_reducescatter', False]")
    assert _hash_of({}) == expected
    assert DEFAULT_ALL2ALL_BACKEND == "allgather_reducescatter"
    assert _hash_of({"all2allBackend": "allgather_reducescatter"}) == expected


def test_config_hash_eplb_on() -> None:
    pc = {
        "tensorParallelSize": 2,
        "dataParallelSize": 16,
        "enableExpertParallel": True,
        "all2allBackend": "deepep_low_latency",
        "enableEplb": True,
        "eplbConfig": {"windowSize": 1000, "stepInterval": 3000, "numRedundantExperts": 32},
    }
    # + [log_balancedness, window_size, step_interval, num_redundant_experts]
    expected = _sha("[1, 2, True, 16, 'deepep_low_latency', True, False, 1000, 3000, 32]")
    assert _hash_of(pc) == expected


def test_config_hash_eplb_deprecated_forwarded() -> None:
    pc = {
        "pipelineParallelSize": 2,
        "dataParallelSize": 4,
        "enableExpertParallel": True,
        "enableEplb": True,
        "eplbWindowSize": 500,
        "eplbLogBalancedness": True,
        "numRedundantExperts": 8,
    }
    expected = _sha("[2, 1, True, 4, 'allgather_reducescatter', True, True, 500, 3000, 8]")
    assert _hash_of(pc) == expected


def test_config_hash_eplb_off_ignores_eplb_config() -> None:
    expected = _sha("[1, 1, True, 8, 'naive', False]")
    base = {"dataParallelSize": 8, "enableExpertParallel": True, "all2allBackend": "naive"}
    assert _hash_of(base) == expected
    assert _hash_of({**base, "eplbConfig": {"windowSize": 5, "numRedundantExperts": 0}}) == expected


def test_config_hash_ignores_non_factors() -> None:
    """Fields outside compute_hash's factors (ports, LB mode, DBO) leave the hash alone."""
    base = {"dataParallelSize": 4, "enableExpertParallel": True, "all2allBackend": "deepep_high_throughput"}
    h = _hash_of(base)
    assert h == _hash_of(
        {**base, "dataParallelRpcPort": 1234, "dataParallelExternalLb": True, "enableDbo": True}
    )
    assert h != _hash_of({**base, "dataParallelSize": 8})
    assert h != _hash_of({**base, "all2allBackend": "deepep_low_latency"})
