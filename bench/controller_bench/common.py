"""Constants, errors and small process helpers every part of the controller bench uses."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from wideep import defaults

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_USER = "wideep-bench-operator"
BASELINE_USER = "wideep-bench-baseline"
LWS_USER = "wideep-bench-lws"  # LeaderWorkerSet's controller (bench/lws.py)
USERS = (OPERATOR_USER, BASELINE_USER, LWS_USER)
GROUP = "wideep.dev"
VERSION = "v1alpha1"
PLURAL = "paralleldeployments"
PD_PATH = f"/apis/{GROUP}/{VERSION}"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
CONCURRENCY = defaults.CONCURRENCY  # the operator's default (--concurrency), used by the baseline client too
PD_NAME = "ds"


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = f"{ROOT / 'operator'}{os.pathsep}{ROOT}"
    env.update(extra or {})
    return env
