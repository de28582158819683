"""``python -m bench.controller_bench observe ...``: the observer process (``observer.observe``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from .observer import observe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.controller_bench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("observe", help="(internal) watch a namespace and print milestones")
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--mode", choices=("create", "recovery"), required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--services", type=int, required=True)
    p.add_argument("--pd", action="store_true")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(observe(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
