"""The ``wideep`` command: validate, render and crd work offline; run starts the operator."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from wideep import __version__, defaults


def _load_documents(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if path == "-":
        text = sys.stdin.read()
        name = "<stdin>"
    else:
        text = Path(path).read_text()
        name = path
    docs: list[Any]
    if text.lstrip().startswith(("{", "[")):
        loaded = json.loads(text)
        docs = loaded if isinstance(loaded, list) else [loaded]
    else:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    for i, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for j, item in enumerate(doc["items"]):
                yield f"{name}#{i}.items[{j}]", item
        elif isinstance(doc, dict):
            yield f"{name}#{i}" if len(docs) > 1 else name, doc
        else:
            raise ValueError(f"{name}: document {i} is not a mapping")


def _pdep_docs(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    from wideep.api import constants

    for where, doc in _load_documents(path):
        if doc.get("kind") == constants.KIND:
            yield where, doc


def cmd_validate(args: argparse.Namespace) -> int:
    from wideep.api.validate import validate_object

    failed = False
    count = 0
    for path in args.filename:
        try:
            docs = list(_pdep_docs(path))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
            return 2
        for where, doc in docs:
            count += 1
            verdict = validate_object(doc)
            name = (doc.get("metadata") or {}).get("name", "?")
            for w in verdict.warnings:
                print(f"Warning: {where} ({name}): {w}", file=sys.stderr)
            if verdict.ok:
                if not args.quiet:
                    print(f"{where}: ParallelDeployment {name} is valid", file=sys.stderr)
            else:
                failed = True
                for issue in verdict.errors:
                    print(str(issue))
    if count == 0:
        print("no ParallelDeployment found in the input", file=sys.stderr)
        return 1
    return 1 if failed else 0


def cmd_render(args: argparse.Namespace) -> int:
    from wideep.api.validate import validate_object
    from wideep.planning.planner import plan_objects

    items: list[dict[str, Any]] = []
    failed = False
    for where, doc in _pdep_docs(args.filename):
        verdict = validate_object(doc)
        if not verdict.ok:
            failed = True
            for issue in verdict.errors:
                print(f"{where}: {issue}", file=sys.stderr)
            continue
        assert verdict.obj is not None
        items.extend(plan_objects(verdict.obj))
    if failed:
        return 1
    out = {"apiVersion": "v1", "kind": "List", "items": items}
    if args.output == "json":
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from wideep.yaml_out import dump

        sys.stdout.write(dump(out))
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from wideep.api.generate import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from wideep.handlers.main import LeaderConfig, run_operator

    leader = None
    if args.leader_elect:
        if not 3 <= args.lease_seconds <= 300:
            print("wideep run: --lease-seconds must be within 3..300", file=sys.stderr)
            return 2
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}_{secrets.token_hex(4)}"
        leader = LeaderConfig(
            namespace=args.leader_elect_namespace or os.environ.get("POD_NAMESPACE", ""),
            name=args.leader_elect,
            identity=identity,
            lease_seconds=args.lease_seconds,
        )
    return run_operator(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        leader_election=leader,
        liveness_port=args.liveness_port,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
        verbose=args.verbose,
        resync_seconds=args.resync_seconds,
        status_progress_seconds=args.status_progress_seconds,
        workers=args.workers,
        concurrency=args.concurrency,
        warm_connections=args.concurrency if args.warm_connections is None else args.warm_connections,
        context=args.context,
    )


def cmd_preflight(args: argparse.Namespace) -> int:
    from wideep.preflight.main import main as preflight_main

    return preflight_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wideep", description="Operator for vLLM wide expert-parallel deployments."
    )
    parser.add_argument("--version", action="version", version=f"wideep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate ParallelDeployment manifests offline (exit 1 when invalid)")
    p.add_argument(
        "-f", "--filename", action="append", required=True, help="YAML or JSON file, '-' for stdin"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid objects")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="print the Kubernetes List the operator would create, with no cluster")
    p.add_argument("-f", "--filename", required=True, help="YAML or JSON file, '-' for stdin")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("crd", help="print the ParallelDeployment CustomResourceDefinition")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("run", help="run the operator")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    p.add_argument(
        "--context",
        default=None,
        help="the kubeconfig context to use (default: the current one; $KUBECONFIG may list several files)",
    )
    p.add_argument(
        "--leader-elect",
        metavar="LEASE",
        default=None,
        help="elect a leader among replicas with this coordination.k8s.io Lease; only the leader acts (default: off,"
        " one replica)",
    )
    p.add_argument(
        "--leader-elect-namespace",
        default=None,
        help="the Lease's namespace (default: $POD_NAMESPACE, else the credentials' namespace)",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=defaults.LEASE_SECONDS,
        help="Lease duration: a leader that stops renewing is replaced after this (renewed every 2/15 of it)",
    )
    p.add_argument(
        "--liveness-port",
        type=int,
        default=defaults.LIVENESS_PORT,
        help="serve /healthz on this port (0: off)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=defaults.METRICS_PORT,
        help="serve Prometheus /metrics on this port (0: off)",
    )
    p.add_argument("--log-format", choices=("json", "plain"), default="json")
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=defaults.RESYNC_SECONDS,
        help="level-based resync period of every object",
    )
    p.add_argument(
        "--status-progress-seconds",
        type=float,
        default=defaults.STATUS_PROGRESS_SECONDS,
        help="a group coming up writes its status (ready counts; a new group's first status) at most this "
        "often, and the pod events behind those counts are taken in by one reconcile per period; any other "
        "change is acted on and written at once (0: every event at once)",
    )
    p.add_argument(
        "--workers", type=int, default=defaults.WORKERS, help="ParallelDeployments reconciled at once"
    )
    p.add_argument(
        "--concurrency", type=int, default=defaults.CONCURRENCY, help="API calls in flight at once"
    )
    p.add_argument(
        "--warm-connections",
        type=int,
        default=None,
        help="API server connections kept open between bursts of writes, so that a group's creation or "
        "restart pays no TLS handshakes (default: --concurrency; 0: off)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "preflight", help="check this rank can join its DP group (runs in a rank pod)", add_help=False
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_preflight)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["preflight"]:
        # argparse's REMAINDER does not keep options (--timeout ...): hand them over untouched.
        return cmd_preflight(argparse.Namespace(rest=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except BrokenPipeError:
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
