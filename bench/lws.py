"""LeaderWorkerSet (sigs.k8s.io/lws) as a third column: the same group on the same API server.

Built from Go modules like the control plane (``go install sigs.k8s.io/lws/cmd@<version>``, cached by
version outside the repository); its CRD comes from the same module. The controller runs on 127.0.0.1 with
its own bench identity (audited like the operator and the baseline), leader election off, and its webhooks
(LeaderWorkerSet defaulting and validation, the pod webhook that labels group members) registered by
``https://127.0.0.1`` URL with a self-signed certificate, since nothing here can reach a Service.

The equivalent group: one LeaderWorkerSet replica of size N (a leader and N-1 workers), each pod the
operator's rank-0 pod spec (same image, 1 GPU, same node selector and tolerations). LWS makes one leader
StatefulSet, one worker StatefulSet and one headless Service; kube-controller-manager's StatefulSet
controller creates the pods, at its default client rate (20 QPS, burst 30), as it would in any cluster
that does not tune it.

    t0 ── POST the LeaderWorkerSet ── created: N pods and the headless Service seen ── Ready: N pods Ready
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import free_port

from .controller_bench.cases import Bench, observed_run
from .controller_bench.cluster import Api, cleanup, cluster_pids, make_namespace, wait_quiet
from .controller_bench.common import LWS_USER, BenchError, log
from .controller_bench.measure import CpuSampler, loadavg
from .controller_bench.objects import pdep_doc, planned_objects
from .controller_bench.observer import Observer

LWS_VERSION = "v0.7.0"
LWS_MODULE = "sigs.k8s.io/lws"
LWS_API = "/apis/leaderworkerset.x-k8s.io/v1"
CRD_FILE = "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml"
WEBHOOKS_FILE = "config/webhook/manifests.yaml"
MEMBER_LABEL = "leaderworkerset.sigs.k8s.io/name"


def _go_env() -> dict[str, str]:
    return {**os.environ, "GOFLAGS": "-buildvcs=false"}


def ensure_built() -> Path:
    """The LWS folder of the cache: ``bin/lws-manager`` and the module's files, built once per version."""
    from devcluster import versions

    go = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    target = Path(versions.cache_root()) / "lws" / f"{LWS_VERSION}-{go}"
    binary = target / "bin" / "lws-manager"
    if binary.is_file() and (target / "crd.yaml").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "bin").mkdir(parents=True)
    log(f"building LeaderWorkerSet {LWS_VERSION} from Go modules (a few minutes, once)")
    started = time.monotonic()
    env = _go_env()
    work = partial / "work"
    work.mkdir()
    try:
        # In a module of its own (go install mod@version would read the version list, which the proxy
        # here refuses): LWS's go.mod decides every dependency version, as in its own build.
        for cmd in (
            ["go", "mod", "init", "wideep.dev/bench-lws"],
            ["go", "get", f"{LWS_MODULE}@{LWS_VERSION}"],
            [
                "go",
                "build",
                "-mod=mod",
                "-trimpath",
                "-ldflags",
                "-s -w",
                "-o",
                str(partial / "bin" / "lws-manager"),
                f"{LWS_MODULE}/cmd",
            ],
        ):
            subprocess.run(cmd, cwd=work, env=env, check=True)
        moddir = subprocess.run(
            ["go", "mod", "download", "-json", f"{LWS_MODULE}@{LWS_VERSION}"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        src = Path(json.loads(moddir)["Dir"])
        shutil.copyfile(src / CRD_FILE, partial / "crd.yaml")
        shutil.copyfile(src / WEBHOOKS_FILE, partial / "webhooks.yaml")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    log(f"LeaderWorkerSet built in {time.monotonic() - started:.0f}s: {target}")
    return target


def serving_cert(folder: Path) -> bytes:
    """A self-signed certificate for 127.0.0.1 (tls.crt, tls.key in ``folder``); returns the PEM."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=lws-webhook",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(folder / "tls.key"),
            "-out",
            str(folder / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )
    return (folder / "tls.crt").read_bytes()


def webhook_configurations(
    manifests: str, port: int, ca_pem: bytes, namespaces: list[str]
) -> list[dict[str, Any]]:
    """LWS's webhook configurations pointed at https://127.0.0.1:<port>, its pod webhooks limited to pods
    of LeaderWorkerSets (as its kustomize patches do) and every webhook to the bench's LWS namespaces."""
    import base64

    bundle = base64.b64encode(ca_pem).decode()
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        doc["metadata"]["name"] = f"wideep-bench-lws-{doc['metadata']['name']}"
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
            hook["namespaceSelector"] = {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
                ]
            }
            if any("pods" in r["resources"] for r in hook["rules"]):
                hook["objectSelector"] = {"matchExpressions": [{"key": MEMBER_LABEL, "operator": "Exists"}]}
        out.append(doc)
    return out


class LwsController:
    """lws-manager on 127.0.0.1 under the bench's LWS identity."""

    def __init__(self, cluster: Any, home: Path, out_dir: Path) -> None:
        self.cluster, self.home, self.out_dir = cluster, home, out_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.webhook_port, self.health_port = free_port(), free_port()
        self.state = Path(cluster.state_dir) / "lws"
        self.log_path = out_dir / "lws-manager.log"

    async def install(self, admin: Api, namespaces: list[str]) -> None:
        crd = yaml.safe_load((self.home / "crd.yaml").read_text())
        await admin.call(
            "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        )
        await admin.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        ca = serving_cert(self.state / "certs")
        for doc in webhook_configurations(
            (self.home / "webhooks.yaml").read_text(), self.webhook_port, ca, namespaces
        ):
            plural = (
                "mutatingwebhookconfigurations"
                if doc["kind"].startswith("Mutating")
                else "validatingwebhookconfigurations"
            )
            base = f"/apis/admissionregistration.k8s.io/v1/{plural}"
            await admin.call("DELETE", f"{base}/{doc['metadata']['name']}")
            await admin.ok("POST", base, doc)
        for _ in range(100):  # the CRD is served
            status, _body = await admin.call("GET", f"{LWS_API}/leaderworkersets")
            if status == 200:
                break
            await asyncio.sleep(0.1)

    def start(self, timeout: float = 60) -> LwsController:
        config = self.state / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "config.lws.x-k8s.io/v1alpha1",
                    "kind": "Configuration",
                    "leaderElection": {"leaderElect": False},
                    "internalCertManagement": {"enable": False},
                    "webhook": {
                        "port": self.webhook_port,
                        "host": "127.0.0.1",
                        "certDir": str(self.state / "certs"),
                    },
                    "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
                    "metrics": {"bindAddress": "0"},
                }
            )
        )
        env = {**os.environ, "KUBECONFIG": str(self.cluster.user_kubeconfig(LWS_USER))}
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(self.home / "bin" / "lws-manager"), f"--config={config}", "--zap-log-level=error"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"lws-manager exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                with opener.open(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(
                    f"lws-manager not ready in {timeout:.0f}s: {self.log_path.read_text()[-2000:]}"
                )
            time.sleep(0.2)
        time.sleep(1.0)  # the webhook server and the informers are up with the manager's start
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        from devcluster.cluster import stop_group

        if self.proc is not None:
            stop_group(self.proc, grace=20)


def lws_doc(name: str, namespace: str, n: int) -> dict[str, Any]:
    """A LeaderWorkerSet of one group of N pods, each the operator's rank-0 pod spec."""
    doc = pdep_doc(name, namespace, n)
    pod = next(o for o in planned_objects(doc, "00000000-0000-4000-8000-000000000000") if o["kind"] == "Pod")
    spec = dict(pod["spec"])
    for per_pod in (
        "hostname",
        "subdomain",
        "restartPolicy",
    ):  # a StatefulSet names its pods and restarts them
        spec.pop(per_pod, None)
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {"size": n, "leaderTemplate": template, "workerTemplate": template},
        },
    }


RUNS_MAX = 3


def namespace(n: int, run: int) -> str:
    """A namespace per run: LWS keeps ControllerRevisions by name, which a second group of the same name in
    the same namespace would trip over ("more than one revision")."""
    return f"bench-lws-{n}-{run}"


async def lws_case(b: Bench, lws: LwsController, n: int, run: int) -> dict[str, Any]:
    ns = namespace(n, run)
    await make_namespace(b.admin, ns)
    res: dict[str, Any] = {"n": n, "namespace": ns}
    res["quiet_wait_s"] = await wait_quiet(b.admin, b.cluster.pids())
    doc = lws_doc("ds", ns, n)
    obs = await Observer(b.cluster, ns, "create", n, pd=False, services=1).start()
    sampler = CpuSampler({**cluster_pids(b.cluster), "lws": lws.pid, "observer": obs.pid}).start()
    a0, load0 = b.audit.offset(), loadavg()
    t0, t0_wall = time.monotonic(), time.time()
    status, body = await b.user.call("POST", f"{LWS_API}/namespaces/{ns}/leaderworkersets", doc)
    if status != 201:
        await obs.stop()
        await sampler.stop()
        raise BenchError(f"LeaderWorkerSet: {status} {body.get('message', body)}")
    await observed_run(b, res, obs, sampler, (t0, t0_wall, a0, load0), LWS_USER, b.timeout(n) + n * 0.1)
    res["cleanup_s"] = await remove(b.admin, ns)
    return res


async def remove(admin: Api, ns: str) -> float:
    """The LeaderWorkerSet and its StatefulSets first (they would recreate the pods), then the rest."""
    t0 = time.monotonic()
    orphan = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Orphan"}
    await admin.call("DELETE", f"{LWS_API}/namespaces/{ns}/leaderworkersets", orphan)
    await admin.call("DELETE", f"/apis/apps/v1/namespaces/{ns}/statefulsets", orphan)
    for _ in range(200):
        if not await admin.items(
            f"/apis/apps/v1/namespaces/{ns}/statefulsets", limit="1"
        ) and not await admin.items(f"{LWS_API}/namespaces/{ns}/leaderworkersets", limit="1"):
            break
        await asyncio.sleep(0.1)
    return time.monotonic() - t0 + await cleanup(admin, ns)


def available() -> str | None:
    """Why LWS cannot be built here, or None."""
    if shutil.which("go") is None:
        return "no Go toolchain"
    if shutil.which("openssl") is None:
        return "no openssl for the webhook certificate"
    probe = subprocess.run(
        ["go", "list", "-m", "-json", f"{LWS_MODULE}@{LWS_VERSION}"],
        check=False,
        capture_output=True,
        text=True,
        env=_go_env(),
        cwd="/",
    )
    return (
        None
        if probe.returncode == 0
        else f"the Go module proxy refuses {LWS_MODULE}@{LWS_VERSION}: {probe.stderr.strip()[-300:]}"
    )
