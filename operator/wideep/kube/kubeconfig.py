"""Credentials the way kubectl finds them: in-cluster ServiceAccount, or kubeconfig files.

- ``$KUBECONFIG`` may list several files: they are merged as kubectl merges them (client-go
  ``tools/clientcmd/loader.go``): the first file that defines a cluster, user or context of a given name
  wins, and so does the first ``current-context``. Missing files are skipped. Relative paths are resolved
  against the file that holds them.
- ``--context`` picks a context other than the current one.
- Users: a static token, a ``tokenFile`` (re-read on every use: projected tokens rotate), client
  certificates (files or ``*-data``), or an ``exec`` credential plugin (``client.authentication.k8s.io``
  v1 or v1beta1, how EKS, GKE and AKS clusters authenticate), whose token is cached until the
  ``expirationTimestamp`` it states and fetched again then, or at once when the API server answers 401.
- Nothing is written to disk: a CA given as data is loaded from memory, and client certificates given as
  data live in anonymous in-memory files (memfd), so the operator runs with no writable path at all. (The
  ``kubernetes`` package's loader writes ``*-data`` to temporary files, ``config/kube_config.py``
  ``_create_temp_file_with_content``, which fails on a read-only root without a ``/tmp`` volume.)

Auth providers (``auth-provider: oidc/gcp/azure``) were removed from kubectl in 1.26 in favour of exec
plugins (kubelogin, gke-gcloud-auth-plugin): a kubeconfig that still uses one gets a clear error.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT_SECONDS = 60.0
EXPIRY_SKEW = dt.timedelta(seconds=5)  # fetch a new token this long before the stated expiry


class KubeconfigError(RuntimeError):
    """A kubeconfig that cannot be used, with what is wrong and where."""


@dataclass(frozen=True)
class ExecPlugin:
    """A user's ``exec`` section: the command that prints an ExecCredential."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str | None = None
    cluster_info: dict[str, Any] | None = None  # given to the plugin when provideClusterInfo is set


class ExecTokens:
    """The tokens of an exec plugin, fetched when none is held or the held one expired (or was refused)."""

    def __init__(self, plugin: ExecPlugin) -> None:
        self.plugin = plugin
        self._token: str | None = None
        self._expiry: dt.datetime | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    @property
    def expiry(self) -> dt.datetime | None:
        return self._expiry

    def _valid(self, now: dt.datetime) -> bool:
        return self._token is not None and (self._expiry is None or now < self._expiry - EXPIRY_SKEW)

    def get(self, refresh: bool = False) -> str:
        """The current token; runs the plugin (blocking) when there is none, it expired, or ``refresh``."""
        with self._lock:
            if refresh or not self._valid(dt.datetime.now(dt.UTC)):
                self._token, self._expiry = self._fetch()
                self.fetches += 1
            assert self._token is not None
            return self._token

    async def get_async(self, refresh: bool = False) -> str:
        if not refresh and self._valid(dt.datetime.now(dt.UTC)):
            assert self._token is not None
            return self._token
        return await asyncio.to_thread(self.get, refresh)

    def _fetch(self) -> tuple[str, dt.datetime | None]:
        p = self.plugin
        spec: dict[str, Any] = {"interactive": False}
        if p.cluster_info is not None:
            spec["cluster"] = p.cluster_info
        env = {**os.environ, **dict(p.env)}
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": p.api_version, "kind": "ExecCredential", "spec": spec}
        )
        try:
            proc = subprocess.run(
                [p.command, *p.args],
                env=env,
                capture_output=True,
                text=True,
                timeout=EXEC_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as exc:
            hint = f"; {p.install_hint}" if p.install_hint else ""
            raise KubeconfigError(f"exec credential plugin {p.command!r} not found{hint}") from exc
        if proc.returncode != 0:
            raise KubeconfigError(
                f"exec credential plugin {p.command!r} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}"
            )
        try:
            cred = json.loads(proc.stdout)
        except ValueError as exc:
            raise KubeconfigError(
                f"exec credential plugin {p.command!r} printed no ExecCredential JSON"
            ) from exc
        if cred.get("apiVersion") != p.api_version or cred.get("kind") != "ExecCredential":
            raise KubeconfigError(
                f"exec credential plugin {p.command!r} printed {cred.get('apiVersion')}/{cred.get('kind')}, "
                f"want {p.api_version}/ExecCredential"
            )
        status = cred.get("status") or {}
        token = status.get("token")
        if not token:
            what = "a client certificate" if status.get("clientCertificateData") else "no token"
            raise KubeconfigError(
                f"exec credential plugin {p.command!r} returned {what}; wideep supports exec plugins that "
                f"return a token"
            )
        expiry = status.get("expirationTimestamp")
        return str(token), _parse_time(expiry) if expiry else None


def _parse_time(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _memfile(data: bytes, name: str) -> str:
    """An anonymous in-memory file holding ``data``, as a path the ssl module can open."""
    fd = os.memfd_create(name)
    os.write(fd, data)
    return f"/proc/self/fd/{fd}"


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_path: str | None = None
    ca_data: str | None = None  # PEM
    token: str | None = None
    token_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False
    namespace: str | None = None
    exec_tokens: ExecTokens | None = field(default=None, compare=False, repr=False)

    def bearer(self) -> str | None:
        """The bearer token (an exec plugin's is fetched when needed: blocking)."""
        if self.exec_tokens is not None:
            return self.exec_tokens.get()
        if self.token_path:
            return Path(self.token_path).read_text().strip()  # projected tokens rotate: re-read
        return self.token

    async def bearer_async(self, refresh: bool = False) -> str | None:
        """The bearer token; ``refresh``: the API server refused the last one (an exec plugin is asked anew)."""
        if self.exec_tokens is not None:
            return await self.exec_tokens.get_async(refresh)
        return self.bearer()

    @property
    def refreshable(self) -> bool:
        return self.exec_tokens is not None

    @property
    def expiry(self) -> dt.datetime | None:
        return self.exec_tokens.expiry if self.exec_tokens is not None else None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_path, cadata=self.ca_data)
        if self.cert_path and self.key_path:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


def kubeconfig_paths() -> list[Path]:
    env = os.environ.get("KUBECONFIG", "")
    paths = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return paths or [Path.home() / ".kube" / "config"]


@dataclass
class _Merged:
    current_context: str | None = None
    entries: dict[str, dict[str, tuple[dict[str, Any], Path]]] = field(
        default_factory=lambda: {"clusters": {}, "users": {}, "contexts": {}}
    )


def merge_kubeconfigs(paths: list[Path]) -> _Merged:
    """kubectl's merge: the first file to define a name (or current-context) wins; missing files are skipped."""
    merged = _Merged()
    found = False
    for path in paths:
        if not path.is_file():
            continue
        found = True
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise KubeconfigError(f"kubeconfig {path}: not YAML: {exc}") from exc
        if not merged.current_context and cfg.get("current-context"):
            merged.current_context = str(cfg["current-context"])
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for item in cfg.get(section) or []:
                name = item.get("name")
                if name is not None and name not in merged.entries[section]:
                    merged.entries[section][name] = (item.get(key) or {}, path.parent)
    if not found:
        raise KubeconfigError("no kubeconfig found: " + os.pathsep.join(str(p) for p in paths))
    return merged


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise KubeconfigError(f"{what} is not base64") from exc


def _exec_plugin(spec: dict[str, Any], base: Path, cluster: dict[str, Any], where: str) -> ExecPlugin:
    api = spec.get("apiVersion") or ""
    if api not in EXEC_API_VERSIONS:
        raise KubeconfigError(
            f"{where}: exec apiVersion {api!r} is not one of {', '.join(EXEC_API_VERSIONS)}"
        )
    command = str(spec.get("command") or "")
    if not command:
        raise KubeconfigError(f"{where}: exec has no command")
    if os.sep in command and not os.path.isabs(command):
        command = str(
            base / command
        )  # a relative path is relative to the kubeconfig's folder, as kubectl does
    info = None
    if spec.get("provideClusterInfo"):
        info = {
            "server": cluster.get("server"),
            "certificate-authority-data": cluster.get("certificate-authority-data"),
            "insecure-skip-tls-verify": bool(cluster.get("insecure-skip-tls-verify")),
        }
    return ExecPlugin(
        command=command,
        args=tuple(str(a) for a in spec.get("args") or []),
        env=tuple((str(e["name"]), str(e["value"])) for e in spec.get("env") or []),
        api_version=api,
        install_hint=spec.get("installHint"),
        cluster_info=info,
    )


def load_kubeconfig(paths: list[Path], context: str | None = None) -> Credentials:
    merged = merge_kubeconfigs(paths)
    files = os.pathsep.join(str(p) for p in paths)
    name = context or merged.current_context
    if not name:
        raise KubeconfigError(f"kubeconfig {files}: no current-context; pick one with --context")
    if name not in merged.entries["contexts"]:
        known = ", ".join(sorted(merged.entries["contexts"])) or "none"
        raise KubeconfigError(f"kubeconfig {files}: context {name!r} not found (contexts: {known})")
    ctx, _ = merged.entries["contexts"][name]
    try:
        cluster, cluster_base = merged.entries["clusters"][str(ctx.get("cluster"))]
    except KeyError:
        raise KubeconfigError(
            f"kubeconfig {files}: context {name!r} names cluster {ctx.get('cluster')!r}, not found"
        ) from None
    try:
        user, user_base = merged.entries["users"][str(ctx.get("user"))]
    except KeyError:
        if ctx.get("user"):
            raise KubeconfigError(
                f"kubeconfig {files}: context {name!r} names user {ctx.get('user')!r}, not found"
            ) from None
        user, user_base = {}, cluster_base
    if not cluster.get("server"):
        raise KubeconfigError(f"kubeconfig {files}: cluster {ctx.get('cluster')!r} has no server")

    def rel(p: str | None, base: Path) -> str | None:
        return None if p is None else p if os.path.isabs(p) else str(base / p)

    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name")
        raise KubeconfigError(
            f"kubeconfig {files}: user {ctx.get('user')!r} uses the auth-provider {provider!r}, which kubectl "
            f"removed in 1.26; use its exec credential plugin (kubelogin, gke-gcloud-auth-plugin, ...)"
        )
    ca_data = None
    if cluster.get("certificate-authority-data"):
        ca_data = _b64(cluster["certificate-authority-data"], "certificate-authority-data").decode()
    cert = rel(user.get("client-certificate"), user_base)
    key = rel(user.get("client-key"), user_base)
    if user.get("client-certificate-data"):
        cert = _memfile(
            _b64(user["client-certificate-data"], "client-certificate-data"), "wideep-client-cert"
        )
    if user.get("client-key-data"):
        key = _memfile(_b64(user["client-key-data"], "client-key-data"), "wideep-client-key")
    tokens = None
    if user.get("exec"):
        where = f"kubeconfig {files}, user {ctx.get('user')!r}"
        tokens = ExecTokens(_exec_plugin(user["exec"], user_base, cluster, where))
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_path=None if ca_data else rel(cluster.get("certificate-authority"), cluster_base),
        ca_data=ca_data,
        token=user.get("token"),
        token_path=rel(user.get("tokenFile"), user_base),
        cert_path=cert,
        key_path=key,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        namespace=ctx.get("namespace"),
        exec_tokens=tokens,
    )


def load_credentials(context: str | None = None) -> Credentials:
    """In-cluster ServiceAccount (unless $KUBECONFIG or a context is given), else the kubeconfig files."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if host and port and (SA_DIR / "token").exists() and not os.environ.get("KUBECONFIG") and not context:
        ns_file = SA_DIR / "namespace"
        return Credentials(
            server=f"https://{host}:{port}",
            ca_path=str(SA_DIR / "ca.crt"),
            token_path=str(SA_DIR / "token"),
            namespace=ns_file.read_text().strip() if ns_file.exists() else None,
        )
    return load_kubeconfig(kubeconfig_paths(), context)
