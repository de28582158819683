"""Property test: for random ParallelDeployments, the real API server and ``validate_object`` agree.

Hypothesis draws specs near the rules' boundaries (``tests.support.strategies.objects``: sizes 0..20,
DP-local -1..20, every boolean, enums with an unknown value and unset, colliding ports, a few reserved args
and env names, bad names) and sends each to the API server with ``dryRun=All&fieldValidation=Strict`` over
one kept-alive connection. For every example: same accept/refuse verdict; a refusal names at least one field
path pydantic names too; an accepted object is stored with the defaults pydantic applies.

``WIDEEP_FUZZ_EXAMPLES`` raises the number of examples (default 150).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.apiserver import DryRun, DryRunClient, apiserver_paths
from tests.support.builders import parallel_deployment
from tests.support.strategies import objects
from wideep.api.validate import validate_object

MAX_EXAMPLES = int(os.environ.get("WIDEEP_FUZZ_EXAMPLES", "150"))


def compare(dry_run: DryRunClient, obj: dict[str, Any]) -> str:
    verdict = validate_object(obj)
    result = dry_run(obj)
    mine = sorted(f"{e.path}: {e.message} [{e.rule}]" for e in verdict.errors)
    detail = f"\nobject: {obj}\npydantic: {mine or 'valid'}\nAPI server ({result.status}): {result.message}"
    assert result.status in (201, 400, 422), detail
    assert verdict.ok == result.accepted, "verdicts differ" + detail
    if verdict.ok:
        assert verdict.obj is not None
        model = verdict.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert result.body["spec"]["parallelConfig"] == model["parallelConfig"], "defaults differ" + detail
        return "accepted"
    common = {e.path for e in verdict.errors} & apiserver_paths(result)
    assert common, "no field path named by both" + detail
    return "refused"


def test_apiserver_agrees_with_pydantic(dry_run: DryRunClient) -> None:
    stats: Counter[str] = Counter()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    @given(obj=objects())
    def check(obj: dict[str, Any]) -> None:
        stats[compare(dry_run, obj)] += 1

    check()
    total = sum(stats.values())
    print(f"\n[agreement] {total} examples: {dict(stats)}")
    # the strategy must exercise both verdicts
    assert stats["accepted"] >= total // 10, stats
    assert stats["refused"] >= total // 10, stats


@pytest.mark.parametrize(
    "changes",
    [
        {"tensorParallelSize": 0},
        {"dataParallelSize": 4, "dataParallelSizeLocal": 3},
        {"dataParallelExternalLb": True},
        {"all2allBackend": "bogus", "enableDbo": True},
    ],
    ids=["bound", "rule", "rule-external", "enum+rule"],
)
def test_compare_reports_common_path(dry_run: DryRunClient, changes: dict[str, Any]) -> None:
    """The comparison itself: refused by both, with a field path both name."""
    assert compare(dry_run, parallel_deployment(parallel_config=changes)) == "refused"


def test_apiserver_paths_parse_strict_decoding_errors() -> None:
    result = DryRun(
        400,
        {
            "message": 'ParallelDeployment in version "v1alpha1" cannot be handled as a ParallelDeployment: '
            'strict decoding error: unknown field "spec.parallelConfig.foo"'
        },
        [],
    )
    assert apiserver_paths(result) == {"spec.parallelConfig.foo"}
