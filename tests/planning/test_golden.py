"""Golden files: ``wideep render -o yaml`` of every ``examples/*.yaml`` is ``golden/<example>.yaml``.

This is what GitOps users diff in review, so any change to the rendered objects must be a reviewed
change to these files. Regenerate them with::

    WIDEEP_UPDATE_GOLDEN=1 PYTHONPATH=operator python -m pytest tests/planning/test_golden.py

The examples carry no ``metadata.uid``, so the goldens have no ownerReferences (a real object gets them
from its uid; ``test_planner.py`` checks that).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest
import yaml

from tests.support.builders import example_paths
from wideep import cli

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("WIDEEP_UPDATE_GOLDEN", "") not in ("", "0")
EXAMPLES = example_paths()


def render(path: Path, output: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    rc = cli.main(["render", "-f", str(path), "-o", output])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_render_matches_golden(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(example.read_text())
    assert "uid" not in (doc.get("metadata") or {}), "examples must not carry a uid (goldens have no owners)"
    rendered = render(example, "yaml", capsys)
    golden = GOLDEN_DIR / f"{example.stem}.yaml"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(rendered)
        return
    assert golden.exists(), f"no golden file {golden}: run with WIDEEP_UPDATE_GOLDEN=1"
    expected = golden.read_text()
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=str(golden.relative_to(GOLDEN_DIR.parents[2])),
                tofile=f"wideep render -f {example.name}",
            )
        )
        pytest.fail(
            f"`wideep render` of {example.name} differs from its golden file "
            f"(WIDEEP_UPDATE_GOLDEN=1 regenerates it after review):\n{diff}",
            pytrace=False,
        )


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_json_output_is_the_same_list(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    as_yaml = yaml.safe_load(render(example, "yaml", capsys))
    as_json = json.loads(render(example, "json", capsys))
    assert as_json == as_yaml
    assert as_json["apiVersion"] == "v1"
    assert as_json["kind"] == "List"
    kinds = {item["kind"] for item in as_json["items"]}
    assert kinds == {"Service", "Pod"}


def test_no_orphan_golden_files() -> None:
    if UPDATE:
        for stale in set(GOLDEN_DIR.glob("*.yaml")) - {GOLDEN_DIR / f"{p.stem}.yaml" for p in EXAMPLES}:
            stale.unlink()
    goldens = {p.stem for p in GOLDEN_DIR.glob("*.yaml")}
    assert goldens == {p.stem for p in EXAMPLES}


def test_invalid_manifest_renders_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["parallelConfig"]["dataParallelSize"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    rc = cli.main(["render", "-f", str(bad)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == ""
    assert "dataParallelSize" in err
