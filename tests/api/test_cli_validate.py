"""``wideep validate``, ``wideep crd`` and ``python -m wideep.api.generate check``, run as processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT
from tests.support.builders import example_paths, external_lb, hybrid_lb, parallel_deployment, wide_ep
from wideep.api import constants
from wideep.api.validate import validate_object

ERROR_LINE = re.compile(r"^(spec|metadata)\.[A-Za-z0-9_.\[\]]+: \S.*$")


def wideep(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    return subprocess.run(
        [sys.executable, "-m", "wideep.cli", *args],
        check=False,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def write_yaml(path: Path, *docs: Any) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


def bad_object() -> dict[str, Any]:
    """Three parallelConfig errors: a bound, a cross-field rule, an unknown enum value."""
    return parallel_deployment(
        "bad",
        parallel_config={"dataParallelSizeLocal": -1, "enableEplb": True, "all2allBackend": "deepep"},
    )


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_examples_exit_0(path: Path) -> None:
    proc = wideep("validate", "-f", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "is valid" in proc.stderr


def test_all_examples_at_once() -> None:
    args = [a for p in example_paths() for a in ("-f", str(p))]
    proc = wideep("validate", "-q", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == proc.stderr == ""


def test_invalid_exits_1_one_line_per_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "bad.yaml", bad_object())
    proc = wideep("validate", "-f", str(path))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == len(validate_object(bad_object()).errors) == 2  # schema errors stop the rules
    for line in lines:
        assert ERROR_LINE.match(line), line
    assert any(line.startswith("spec.parallelConfig.dataParallelSizeLocal: ") for line in lines)
    (enum_line,) = [line for line in lines if line.startswith("spec.parallelConfig.all2allBackend: ")]
    assert "'deepep_low_latency'" in enum_line


def test_rule_errors_one_line_each(tmp_path: Path) -> None:
    obj = parallel_deployment(
        "rules",
        parallel_config={
            "dataParallelSize": 6,
            "dataParallelSizeLocal": 4,
            "enableEplb": True,
            "enableDbo": True,
            "tensorParallelSize": 3,
            "decodeContextParallelSize": 2,
        },
    )
    proc = wideep("validate", "-f", str(write_yaml(tmp_path / "r.yaml", obj)))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    expected = [str(e) for e in validate_object(obj).errors]
    assert lines == expected
    fields = {line.split(":", 1)[0] for line in lines}
    assert fields == {
        "spec.parallelConfig.dataParallelSizeLocal",
        "spec.parallelConfig.enableEplb",
        "spec.parallelConfig.enableDbo",
        "spec.parallelConfig.decodeContextParallelSize",
    }
    assert all(re.fullmatch(r"spec\.parallelConfig\.\w+: .+", line) for line in lines)


def test_multi_document_yaml(tmp_path: Path) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}, "data": {}}
    path = write_yaml(
        tmp_path / "multi.yaml", external_lb("good"), config_map, bad_object(), hybrid_lb("good2")
    )
    proc = wideep("validate", "-f", str(path))
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 2
    assert f"{path}#0: ParallelDeployment good is valid" in proc.stderr
    assert f"{path}#3: ParallelDeployment good2 is valid" in proc.stderr
    assert "other" not in proc.stderr  # the ConfigMap is skipped


def test_multi_document_all_valid(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ok.yaml", external_lb("a"), hybrid_lb("b"), wide_ep("c"))
    proc = wideep("validate", "-f", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("is valid") == 3


def test_kubernetes_list(tmp_path: Path) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": [external_lb("a"), bad_object()]}
    proc = wideep("validate", "-f", str(write_yaml(tmp_path / "list.yaml", doc)))
    assert proc.returncode == 1
    assert "items[0]: ParallelDeployment a is valid" in proc.stderr
    assert len(proc.stdout.splitlines()) == 2


def test_json_object_and_array(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(external_lb("j")))
    proc = wideep("validate", "-f", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = tmp_path / "many.json"
    path.write_text(json.dumps([external_lb("j1"), bad_object()], indent=2))
    proc = wideep("validate", "-f", str(path))
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 2


def test_stdin() -> None:
    proc = wideep("validate", "-f", "-", input=yaml.safe_dump(wide_ep("from-stdin")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<stdin>: ParallelDeployment from-stdin is valid" in proc.stderr
    proc = wideep("validate", "-f", "-", input=json.dumps(bad_object()))
    assert proc.returncode == 1
    assert proc.stdout.startswith("spec.parallelConfig.")


def test_stdin_reserved_args_and_env() -> None:
    obj = parallel_deployment(
        "reserved",
        containers=[
            {
                "name": "vllm",
                "args": ["m", "--data_parallel_size=2", "--trust-remote-code", "-tp"],
                "env": [{"name": "VLLM_PORT", "value": "1"}],
            }
        ],
    )
    proc = wideep("validate", "-f", "-", input=yaml.safe_dump(obj))
    assert proc.returncode == 1
    args_line, env_line = proc.stdout.splitlines()
    assert args_line.startswith("spec.template.spec.containers[0].args: ")
    assert args_line.endswith("found --data_parallel_size=2, -tp (rule reserved-args)")
    assert env_line.startswith("spec.template.spec.containers[0].env: ")
    assert env_line.endswith("found VLLM_PORT (rule reserved-env)")


def test_deprecation_warnings_on_stderr(tmp_path: Path) -> None:
    obj = parallel_deployment(
        "old",
        parallel_config={
            "enableExpertParallel": True,
            "enableEplb": True,
            "dataParallelSize": 2,
            "numRedundantExperts": 8,
            "eplbWindowSize": 100,
        },
    )
    proc = wideep("validate", "-f", str(write_yaml(tmp_path / "old.yaml", obj)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2
    assert "spec.parallelConfig.numRedundantExperts is deprecated" in warnings[0]
    assert "spec.parallelConfig.eplbConfig.numRedundantExperts=8" in warnings[0]
    assert "spec.parallelConfig.eplbWindowSize is deprecated" in warnings[1]
    # -q silences the "is valid" line, not the warnings
    proc = wideep("validate", "-q", "-f", str(tmp_path / "old.yaml"))
    assert proc.returncode == 0
    assert proc.stderr.count("Warning: ") == 2


def test_type_error_strict() -> None:
    obj = parallel_deployment("typed", parallel_config={"tensorParallelSize": "2"})
    proc = wideep("validate", "-f", "-", input=yaml.safe_dump(obj))
    assert proc.returncode == 1
    assert proc.stdout.startswith("spec.parallelConfig.tensorParallelSize: ")


def test_no_parallel_deployment_exits_1(tmp_path: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    proc = wideep("validate", "-f", str(write_yaml(tmp_path / "cm.yaml", cm)))
    assert proc.returncode == 1
    assert "no ParallelDeployment found" in proc.stderr


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    proc = wideep("validate", "-f", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    assert wideep("validate", "-f", str(bad)).returncode == 2


def test_crd_command_prints_committed_crd() -> None:
    proc = wideep("crd")
    assert proc.returncode == 0, proc.stderr
    committed = (ROOT / "crds" / f"{constants.CRD_NAME}.yaml").read_text()
    assert proc.stdout == committed


def test_generate_check_passes_on_committed_tree() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.run(
        [sys.executable, "-m", "wideep.api.generate", "check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout
