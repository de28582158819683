"""``wideep preflight``.

In-process tests (no torch: the project's virtualenv has none) cover the environment's validation,
the verdict and the CLI. The group tests start one process per rank pod with the Python that has
torch (the vLLM virtualenv of ``tools/vllm-venv.sh``, or WIDEEP_TORCH_PYTHON), each with exactly the
environment the planner renders for that pod's preflight init container; rank 0's DNS name is
mapped to 127.0.0.1 with --master-addr-override. Without that Python they skip, unless
WIDEEP_REQUIRE_TORCH=1 (CI), where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devcluster import local_preflight as lg
from wideep import cli
from wideep.preflight import EXIT_FAILED, EXIT_INVALID, EXIT_NO_TORCH, EXIT_OK
from wideep.preflight.config import ConfigError, Overrides, compress, load
from wideep.preflight.main import main
from wideep.preflight.verdict import judge

HASH = "a" * 64
OTHER_HASH = "b" * 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def envs_of(obj: dict[str, Any]) -> list[dict[str, str]]:
    return [env for _, env in lg.pod_commands_and_envs(obj)]


# ------------------------------------------------------------------ the planner's env, validated


@pytest.mark.parametrize(
    ("parallel", "pods", "group"),
    [
        pytest.param({"dp": 4}, 4, 4, id="external-lb"),
        pytest.param({"dp": 8, "local": 4}, 2, 8, id="hybrid-lb"),
        pytest.param({"dp": 4, "local": 2, "lb": "internal"}, 2, 4, id="internal-lb"),
        pytest.param(
            {"dp": 2, "tensorParallelSize": 2, "distributedExecutorBackend": "external_launcher"},
            4,
            4,
            id="torchrun",
        ),
    ],
)
def test_planner_env_validates_and_partitions_the_group(
    parallel: dict[str, Any], pods: int, group: int
) -> None:
    obj = lg.deployment("pf", master_port=29500, **parallel)
    configs = [load(env) for env in envs_of(obj)]
    assert len(configs) == pods
    assert {c.group_size for c in configs} == {group}
    ranks = [r for c in configs for r in c.local_ranks]
    assert sorted(ranks) == list(range(group)), "every rank in exactly one pod"
    assert [c.hosts_store for c in configs] == [True] + [False] * (pods - 1)
    assert len({c.config_hash for c in configs}) == 1
    assert {c.master_addr for c in configs} == {"pf-0.pf-ranks.default.svc.cluster.local"}
    assert all(c.gloo_socket_ifname == "lo" and c.host_ip == "127.0.0.1" for c in configs)


def test_planner_renders_the_preflight_command() -> None:
    (command, env), *_ = lg.pod_commands_and_envs(
        lg.deployment("pf", dp=2, master_port=29500, timeout_seconds=77)
    )
    assert command == ["wideep", "preflight"]
    assert env["WIDEEP_PREFLIGHT_TIMEOUT"] == "77"
    assert load(env).timeout_seconds == 77


def _valid_env(**changes: str | None) -> dict[str, str]:
    env = envs_of(lg.deployment("pf", dp=8, local=4, master_port=29500))[1]
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"WIDEEP_DP_SIZE": None}, "WIDEEP_DP_SIZE is not set"),
        (
            {"WIDEEP_DP_RANK_START": "6"},
            "WIDEEP_DP_RANK_START (6) + WIDEEP_DP_SIZE_LOCAL (4) = 10 exceeds WIDEEP_DP_SIZE (8)",
        ),
        ({"WIDEEP_DP_RANK_START": "0"}, "must be WIDEEP_POD_INDEX x WIDEEP_DP_SIZE_LOCAL (1 x 4 = 4)"),
        (
            {"WIDEEP_DP_SIZE_LOCAL": "3", "WIDEEP_DP_RANK_START": "3"},
            "WIDEEP_DP_SIZE (8) is not a multiple of",
        ),
        ({"WIDEEP_DP_SIZE": "0"}, "WIDEEP_DP_SIZE='0': Input should be greater than or equal to 1"),
        ({"WIDEEP_MASTER_PORT": "70000"}, "WIDEEP_MASTER_PORT='70000'"),
        ({"WIDEEP_CONFIG_HASH": "abc"}, "WIDEEP_CONFIG_HASH='abc'"),
        ({"WIDEEP_MASTER_ADDR": "$(VLLM_HOST_IP)"}, "unexpanded $(...)"),
        ({"WIDEEP_MASTER_ADDR": "bad host!"}, "neither an IP address nor a DNS name"),
        ({"RANK": "1"}, "RANK and WORLD_SIZE must be set together"),
        ({"WIDEEP_POD_INDEX": "x"}, "WIDEEP_POD_INDEX='x'"),
    ],
)
def test_invalid_environment_exits_2_naming_the_problem(
    changes: dict[str, str | None], expected: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["--validate-only"], env=_valid_env(**changes)) == EXIT_INVALID
    err = capfd.readouterr().err
    assert "invalid environment" in err
    assert expected in err


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load(_valid_env(WIDEEP_DP_RANK_START="6", WIDEEP_MASTER_ADDR="$(X)"))
    assert len(info.value.problems) == 3  # start+local > size, start != pod*local, the address


def test_flags_override_the_environment() -> None:
    cfg = load(_valid_env(), Overrides(timeout_seconds=3.5, master_addr="127.0.0.1", master_port=1234))
    assert (cfg.timeout_seconds, cfg.dial_address, cfg.master_port) == (3.5, "127.0.0.1", 1234)
    assert cfg.master_addr.startswith("pf-0.")  # still named in messages


def test_validate_only_describes_the_pod(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--validate-only"], env=_valid_env()) == EXIT_OK
    err = capfd.readouterr().err
    assert "pod 1 (ranks 4-7/8): preflight of pf pod 1: ranks 4-7 of 8 DP ranks; dials pf-0.pf-ranks" in err


def test_cli_passes_options_through(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for k, v in _valid_env().items():
        monkeypatch.setenv(k, v)
    assert cli.main(["preflight", "--validate-only", "--timeout", "42"]) == EXIT_OK
    assert "timeout 42s" in capfd.readouterr().err


def test_unknown_gloo_interface_fails_before_torch(capfd: pytest.CaptureFixture[str]) -> None:
    assert main([], env=_valid_env(GLOO_SOCKET_IFNAME="eth-nope")) == EXIT_INVALID
    err = capfd.readouterr().err
    assert "GLOO_SOCKET_IFNAME='eth-nope': no interface eth-nope in this pod (interfaces here: " in err
    assert "lo" in err


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
def test_without_torch_exits_3(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--timeout", "5"], env=_valid_env()) == EXIT_NO_TORCH
    assert "torch is not importable here" in capfd.readouterr().err


# ------------------------------------------------------------------ the verdict (pure)


def _cfg(n: int = 8, local: int = 1) -> Any:
    obj = lg.deployment("web", dp=n, local=None if local == 1 else local, master_port=29500)
    return load(envs_of(obj)[0])


def _rec(rank: int, h: str = HASH, size: int = 8, dep: str = "web") -> dict[str, Any]:
    return {"rank": rank, "hash": h, "group_size": size, "deployment": dep, "host": f"10.0.0.{rank}"}


def test_judge_all_joined() -> None:
    v = judge(_cfg(), [_rec(r) for r in range(8)], _rec(0))
    assert v.ok
    assert v.message == "all 8 ranks joined"


def test_judge_names_missing_mismatching_and_duplicate_ranks() -> None:
    roster = [
        _rec(0),
        _rec(1),
        _rec(2, OTHER_HASH),
        _rec(3, OTHER_HASH),
        _rec(4),
        _rec(4),
        _rec(6, size=16),
        _rec(9),
    ]
    v = judge(_cfg(), roster, _rec(0))
    assert not v.ok
    assert v.missing == [5, 7]
    assert v.duplicates == [4]
    assert v.mismatched == [2, 3, 6]
    assert "6 of 8 ranks joined within 600s; missing: ranks 5, 7 (pods web-5, web-7)" in v.message
    assert (
        f"config hash mismatch: ranks 2-3 (pods web-2, web-3) carry {OTHER_HASH[:12]}... but rank 0 carries"
        in v.message
    )
    assert "rank 4 (pod web-4) joined more than once" in v.message
    assert "rank 6 (pod web-6) carries group size 16, rank 0 carries 8" in v.message
    assert "claim ranks outside 0-7 (9)" in v.message


def test_judge_names_pods_of_hybrid_ranks() -> None:
    v = judge(_cfg(8, 4), [_rec(r) for r in range(4)], _rec(0))
    assert "missing: ranks 4-7 (pod web-1)" in v.message


def test_compress() -> None:
    assert compress([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert compress(list(range(0, 100, 2))).endswith("... and 34 more")


# ------------------------------------------------------------------ groups of real processes (torch)


@pytest.fixture(scope="module")
def torch_python() -> str:
    python = lg.torch_python()
    if python is None:
        why = "no Python with torch: run `bash tools/vllm-venv.sh` once (or set WIDEEP_TORCH_PYTHON)"
        if os.environ.get("WIDEEP_REQUIRE_TORCH") == "1":
            pytest.fail(why + " (WIDEEP_REQUIRE_TORCH=1)", pytrace=False)
        pytest.skip(why)
    return python


def run_group(python: str, tmp_path: Path, obj: dict[str, Any], wait_s: float, **kw: Any) -> list[lg.PodRun]:
    runs = lg.wait(lg.launch(python, obj, tmp_path, **kw), wait_s)
    for run in runs:  # shown when the test fails
        print(f"----- pod {run.pod}: rc={run.rc} in {run.seconds:.1f}s\n{_tidy(run.log)}")
    return runs


def _tidy(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if not line.startswith("[Gloo]"))


def assert_passed(runs: list[lg.PodRun], port: int, ranks: int) -> None:
    assert [r.rc for r in runs] == [EXIT_OK] * len(runs)
    for run in runs:
        assert re.search(rf"passed in [0-9.]+s: all {ranks} ranks joined, same config hash", run.log)
        assert "0 socket(s) left open" in run.log
        assert run.report["ok"] is True
        assert all(r["collectives_at"] for r in run.report["ranks"])
    assert f"port {port} free again" in runs[0].log
    assert runs[0].report["port_free"] is True
    assert port_bindable(port), "the rendezvous port must be free for vLLM"


# A pass needs every process to import torch within the timeout, and torch's import is the slow part
# (seconds of CPU each): on 2 shared cores, 32 processes took 400 s under load. The timeouts are generous;
# a passing run does not wait for them.
PASS_TIMEOUT = 500  # the processes are killed 40 s later, before pytest's 600 s timeout
TIMEOUT_32 = 900


@pytest.mark.parametrize("n", [2, 8])
def test_ranks_rendezvous_and_pass(torch_python: str, tmp_path: Path, n: int) -> None:
    port = free_port()
    obj = lg.deployment(f"ext{n}", dp=n, master_port=port, timeout_seconds=PASS_TIMEOUT)
    runs = run_group(torch_python, tmp_path, obj, PASS_TIMEOUT + 40)
    assert_passed(runs, port, n)
    assert f"rank 0/{n}: all {n} ranks joined in" in runs[0].log


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_32 + 100)
def test_32_ranks_rendezvous_and_pass(torch_python: str, tmp_path: Path) -> None:
    port = free_port()
    obj = lg.deployment("ext32", dp=32, master_port=port, timeout_seconds=TIMEOUT_32)
    runs = run_group(torch_python, tmp_path, obj, TIMEOUT_32 + 40)
    assert_passed(runs, port, 32)


def test_hybrid_two_pods_of_four_ranks(torch_python: str, tmp_path: Path) -> None:
    port = free_port()
    obj = lg.deployment("hyb", dp=8, local=4, master_port=port, timeout_seconds=PASS_TIMEOUT)
    runs = run_group(torch_python, tmp_path, obj, PASS_TIMEOUT + 40)
    assert_passed(runs, port, 8)
    assert "pod 0 (ranks 0-3/8): passed" in runs[0].log
    assert "pod 1 (ranks 4-7/8): passed" in runs[1].log
    for r in range(8):
        assert f"rank {r}/8: all 8 ranks joined in" in runs[r // 4].log
    assert [r["rank"] for r in runs[1].report["ranks"]] == [4, 5, 6, 7]


def test_torchrun_layout_uses_rank_and_world_size(torch_python: str, tmp_path: Path) -> None:
    port = free_port()
    obj = lg.deployment(
        "tr",
        dp=2,
        master_port=port,
        timeout_seconds=PASS_TIMEOUT,
        distributedExecutorBackend="external_launcher",
    )
    runs = run_group(torch_python, tmp_path, obj, PASS_TIMEOUT + 40)
    assert_passed(runs, port, 2)


def test_cli_and_validation_never_import_torch(torch_python: str) -> None:
    """Where torch is installed, neither the CLI nor `preflight --validate-only` imports it."""
    code = (
        "import sys, wideep.cli\n"
        "rc = wideep.cli.main(['preflight', '--validate-only'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**lg.base_env(), **_valid_env()}
    proc = subprocess.run(
        [torch_python, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# Failure tests: the timeout counts from each process's start, torch's import included; it must outlast
# that import (seconds under load) for the others to have joined when rank 0 judges.
FAIL_TIMEOUT = 60


def preflight_seconds(run: lg.PodRun) -> float:
    """How long the preflight ran by its own clock (from main() to its last log line)."""
    return float(run.report["ended_at"] - run.report["started_at"])


def test_missing_ranks_fail_the_others_within_the_timeout_naming_them(
    torch_python: str, tmp_path: Path
) -> None:
    """Two groups at once (their timeouts run side by side): rank 2 of 3 missing, and rank 0 of 2 missing."""
    port, port0 = free_port(), free_port()
    extra = ("--master-addr-override", "127.0.0.1", "--log-interval", "5")
    obj = lg.deployment("miss", dp=3, master_port=port, timeout_seconds=FAIL_TIMEOUT)
    obj0 = lg.deployment("nozero", dp=2, master_port=port0, timeout_seconds=FAIL_TIMEOUT)
    started = [
        *lg.launch(torch_python, obj, tmp_path / "miss", pods=[0, 1], extra_args=extra),
        *lg.launch(torch_python, obj0, tmp_path / "nozero", pods=[1], extra_args=extra),
    ]
    *runs, run0 = lg.wait(started, FAIL_TIMEOUT + 40)
    for run in started:
        print(f"----- pod {run.pod}: rc={run.rc} in {run.seconds:.1f}s\n{_tidy(run.log)}")

    assert [r.rc for r in runs] == [EXIT_FAILED, EXIT_FAILED]
    for run in runs:
        assert preflight_seconds(run) < FAIL_TIMEOUT + 1, "failed within the timeout"
        assert f"2 of 3 ranks joined within {FAIL_TIMEOUT}s; missing: rank 2 (pod miss-2)" in run.log
        assert "overran" not in run.log
        assert run.report["ok"] is False
        assert "missing: rank 2 (pod miss-2)" in run.report["message"]
    assert "2/3 ranks joined after" in runs[0].log
    assert "waiting for rank 2 (pod miss-2)" in runs[0].log, "rank 0 says whom it waits for"
    assert port_bindable(port)

    # Rank 0 hosts the rendezvous: without it the others cannot count, but they name it.
    assert run0.rc == EXIT_FAILED
    assert preflight_seconds(run0) < FAIL_TIMEOUT + 1
    assert f"rank 0 did not accept connections on 127.0.0.1:{port0} within {FAIL_TIMEOUT}s" in run0.log
    assert "missing: rank 0 (pod nozero-0), which hosts the rendezvous" in run0.log


def test_config_hash_mismatch_fails_every_rank(torch_python: str, tmp_path: Path) -> None:
    port = free_port()
    obj = lg.deployment("mism", dp=4, master_port=port, timeout_seconds=PASS_TIMEOUT)
    runs = run_group(
        torch_python, tmp_path, obj, PASS_TIMEOUT + 40, env_changes={3: {"WIDEEP_CONFIG_HASH": OTHER_HASH}}
    )
    assert [r.rc for r in runs] == [EXIT_FAILED] * 4
    for run in runs:
        assert (
            f"config hash mismatch: rank 3 (pod mism-3) carries {OTHER_HASH[:12]}... but rank 0 carries"
            in run.log
        )
        assert "Gloo group and DP collectives" not in run.log, "no group is formed on a bad verdict"
    assert port_bindable(port)
