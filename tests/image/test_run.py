"""The image run as the chart runs it, against the test control plane: a group to Ready, then a clean stop.

The chart's pod: read-only root filesystem, user 65532, every capability dropped, no privilege escalation,
and one writable path, the /tmp emptyDir. podman gives the same (``--read-only-tmpfs=false``: podman's own
tmpfs on /tmp, /var/tmp and /run would be writable paths the chart does not have); ``--network host`` lets
the container reach the API server on 127.0.0.1. The kubeconfig is mounted read-only.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import LocalCluster
from tests.image.image import BUILD_TIMEOUT, Image
from tests.support.builders import load_example
from tests.support.cluster import free_port, pid_alive
from tests.support.kube import Kube
from tests.support.kubeconfig import kubeconfig_doc
from tests.support.waits import wait_until

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 300)

EXAMPLE = "tp2-external-lb.yaml"
KUBECONFIG = "/etc/wideep/kubeconfig"
CA = "/etc/wideep/ca.crt"
STOP_SECONDS = 10
"""a SIGTERM'd operator exits this fast (podman's SIGKILL would come after 30 s, exit code 137)"""

CHART_SECURITY = (
    "--network=host",
    "--read-only",
    "--read-only-tmpfs=false",
    "--user=65532:65532",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
NOTHING_WRITABLE = ("--ipc=none",)  # and no --tmpfs: not even /dev/shm
PROBE_TEMPDIR = "import tempfile; print(tempfile.gettempdir())"
LABEL = "wideep-image-test-pid"
"""the pytest process that started a container: those of sessions that died are removed"""


def write_kubeconfig(path: Path, cluster: LocalCluster, *, embed_ca: bool) -> Path:
    """A kubeconfig for the container: the cluster's server and admin token; its CA as a mounted file
    (``certificate-authority``) or inline (``certificate-authority-data``). Readable by user 65532."""
    ca = cluster.ca_path.read_bytes()
    cluster_entry: dict[str, str] = {"server": cluster.server}
    if embed_ca:
        cluster_entry["certificate-authority-data"] = base64.b64encode(ca).decode()
    else:
        cluster_entry["certificate-authority"] = CA
        (path.parent / "ca.crt").write_bytes(ca)
        (path.parent / "ca.crt").chmod(0o644)
    config = kubeconfig_doc(
        {"test": cluster_entry}, {"admin": {"token": cluster.token}}, {"test": ("test", "admin")}, "test"
    )
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o644)
    return path


class Container:
    """``wideep run --namespace NS`` in the image, detached, with its health port on the host."""

    def __init__(self, image: Image, namespace: str, kubeconfig: Path, options: tuple[str, ...]) -> None:
        self.image = image
        self.name = f"wideep-image-test-{namespace}-{secrets.token_hex(3)}"
        self.namespace = namespace
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.mounts = [f"{kubeconfig}:{KUBECONFIG}:ro"]
        if (kubeconfig.parent / "ca.crt").exists():
            self.mounts.append(f"{kubeconfig.parent / 'ca.crt'}:{CA}:ro")
        self.options = options

    def run_args(self) -> list[str]:
        args = [*self.options, "--label", f"{LABEL}={os.getpid()}"]
        for mount in self.mounts:
            args += ["--volume", mount]
        return [
            *args,
            "--env",
            f"KUBECONFIG={KUBECONFIG}",
            "--env",
            f"POD_NAME={self.name}",
            "--env",
            f"POD_NAMESPACE={self.namespace}",
            "--env",
            "PYTHONUNBUFFERED=1",
        ]

    def start(self) -> Container:
        self.image.podman(
            "run",
            "--detach",
            "--name",
            self.name,
            *self.run_args(),
            self.image.ref,
            "run",
            f"--namespace={self.namespace}",
            f"--liveness-port={self.liveness_port}",
            f"--metrics-port={self.metrics_port}",
            "--log-format=plain",
            check=True,
        )
        wait_until("the operator in the container to be live", self.alive, timeout=60)
        return self

    def state(self) -> dict[str, object]:
        proc = self.image.podman("inspect", "--format", "{{json .State}}", self.name, check=True)
        state: dict[str, object] = json.loads(proc.stdout)
        return state

    def logs(self) -> str:
        proc = self.image.podman("logs", self.name)
        return (proc.stdout + proc.stderr)[-4000:]

    def alive(self) -> bool:
        state = self.state()
        if not state.get("Running"):
            raise AssertionError(f"the container exited ({state.get('ExitCode')}):\n{self.logs()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> tuple[int, float]:
        """SIGTERM (``podman stop``), then the exit code and how long the stop took."""
        start = time.monotonic()
        self.image.podman("stop", "--time", "30", self.name, timeout=60, check=True)
        took = time.monotonic() - start
        exit_code = self.state()["ExitCode"]
        assert isinstance(exit_code, int)
        return exit_code, took

    def remove(self) -> None:
        self.image.podman("rm", "--force", "--time", "0", self.name, timeout=60)


def remove_leftovers(image: Image) -> None:
    """Containers that earlier test sessions started and could not remove (killed by SIGKILL, say)."""
    listed = image.podman("ps", "--all", "--filter", f"label={LABEL}", "--format", "json", check=True)
    for ctr in json.loads(listed.stdout or "[]"):
        pid = int((ctr.get("Labels") or {}).get(LABEL, "0"))
        if pid != os.getpid() and not pid_alive(pid):
            image.podman("rm", "--force", "--time", "0", ctr["Id"], timeout=60)


@pytest.fixture
def containers(image: Image) -> Iterator[list[Container]]:
    remove_leftovers(image)
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def group_ready_then_clean_stop(
    kube: Kube, namespace: str, container: Container, containers: list[Container]
) -> None:
    containers.append(container)
    container.start()
    obj = load_example(EXAMPLE, namespace)
    name = obj["metadata"]["name"]
    applied = kube.apply(obj)
    assert applied.returncode == 0, applied.stderr
    try:
        ready = kube.wait_ready(namespace, name, timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- container log ---\n{container.logs()}") from exc
    assert ready["status"]["ready"] == f"{ready['status']['totalRanks']}/{ready['status']['totalRanks']}"
    assert len(kube.live_pods(namespace, name)) == 4
    logs = container.logs()
    exit_code, took = container.stop()
    assert exit_code == 0, f"SIGTERM: exit code {exit_code} after {took:.1f}s\n{container.logs()}"
    assert took < STOP_SECONDS, f"SIGTERM: exited 0 but took {took:.1f}s"
    print(f"\n[image] {container.name}: Ready, then SIGTERM: exit code 0 in {took:.1f}s")
    assert "Traceback" not in logs, logs


def test_runs_as_the_chart_runs_it(
    image: Image,
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster, embed_ca=False)
    options = (*CHART_SECURITY, "--tmpfs=/tmp:size=64m")  # the chart's /tmp emptyDir (sizeLimit 64Mi)
    group_ready_then_clean_stop(kube, namespace, Container(image, namespace, kubeconfig, options), containers)


def test_runs_with_no_writable_path_and_an_inline_ca(
    image: Image,
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    options = (*CHART_SECURITY, *NOTHING_WRITABLE)
    # The setting holds what it claims: Python finds no writable temporary directory in it.
    probe = image.podman("run", "--rm", *options, "--entrypoint", "python", image.ref, "-c", PROBE_TEMPDIR)
    assert probe.returncode != 0, f"a writable temporary directory: {probe.stdout}"
    assert "No usable temporary directory" in probe.stderr, probe.stderr
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster, embed_ca=True)
    group_ready_then_clean_stop(kube, namespace, Container(image, namespace, kubeconfig, options), containers)
