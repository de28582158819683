"""Table tests of the kubeconfig loader: kubectl's merge of several files, --context, data loaded without a
file, exec credential plugins and their expiry. (End to end against the API server: tests/e2e/test_credentials.py.)"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.certs import write_pki
from tests.support.kubeconfig import kubeconfig_doc
from wideep.kube.kubeconfig import KubeconfigError, load_kubeconfig, merge_kubeconfigs


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_first_file_to_define_a_name_or_the_current_context_wins(tmp_path: Path) -> None:
    a = _write(
        tmp_path / "a",
        kubeconfig_doc(
            {"c": {"server": "https://a:1"}}, {"u": {"token": "ta"}}, {"x": ("c", "u")}, current="x"
        ),
    )
    b = _write(
        tmp_path / "b",
        kubeconfig_doc(
            {"c": {"server": "https://b:1"}, "d": {"server": "https://d:1"}},
            {"u": {"token": "tb"}, "v": {"token": "tv"}},
            {"x": ("d", "v"), "y": ("d", "v")},
            current="y",
        ),
    )
    creds = load_kubeconfig([a, b])
    assert (creds.server, creds.token) == ("https://a:1", "ta")  # a's current-context, a's definitions
    creds = load_kubeconfig([b, a])
    assert (creds.server, creds.token) == ("https://d:1", "tv")
    creds = load_kubeconfig([a, b], context="y")  # a context only the second file has
    assert (creds.server, creds.token) == ("https://d:1", "tv")
    assert merge_kubeconfigs([tmp_path / "missing", a]).current_context == "x"  # missing files are skipped


def test_relative_paths_are_resolved_against_the_file_that_holds_them(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = _write(
        tmp_path / "one" / "config",
        kubeconfig_doc({"c": {"server": "https://a:1", "certificate-authority": "ca.crt"}}),
    )
    b = _write(
        tmp_path / "two" / "config",
        kubeconfig_doc(users={"u": {"tokenFile": "token"}}, contexts={"x": ("c", "u")}, current="x"),
    )
    (tmp_path / "two" / "token").write_text("rotated-1\n")
    creds = load_kubeconfig([a, b])
    assert creds.ca_path == str(tmp_path / "one" / "ca.crt")
    assert creds.bearer() == "rotated-1"
    (tmp_path / "two" / "token").write_text("rotated-2\n")
    assert creds.bearer() == "rotated-2"  # re-read on every use


@pytest.mark.parametrize(
    ("cfg", "context", "says"),
    [
        (
            kubeconfig_doc({"c": {"server": "https://a:1"}}, {"u": {}}, {"x": ("c", "u")}),
            None,
            "no current-context",
        ),
        (
            kubeconfig_doc({"c": {"server": "https://a:1"}}, {"u": {}}, {"x": ("c", "u")}, "x"),
            "nope",
            "context 'nope' not found (contexts: x)",
        ),
        (kubeconfig_doc({}, {"u": {}}, {"x": ("c", "u")}, "x"), None, "names cluster 'c', not found"),
        (
            kubeconfig_doc({"c": {"server": "https://a:1"}}, {}, {"x": ("c", "u")}, "x"),
            None,
            "names user 'u', not found",
        ),
        (kubeconfig_doc({"c": {}}, {"u": {}}, {"x": ("c", "u")}, "x"), None, "cluster 'c' has no server"),
        (
            kubeconfig_doc(
                {"c": {"server": "https://a:1"}},
                {"u": {"auth-provider": {"name": "oidc"}}},
                {"x": ("c", "u")},
                "x",
            ),
            None,
            "auth-provider 'oidc', which kubectl removed in 1.26",
        ),
        (
            kubeconfig_doc(
                {"c": {"server": "https://a:1"}},
                {"u": {"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}},
                {"x": ("c", "u")},
                "x",
            ),
            None,
            "exec apiVersion 'client.authentication.k8s.io/v1alpha1' is not one of",
        ),
    ],
    ids=[
        "no-current",
        "unknown-context",
        "no-cluster",
        "no-user",
        "no-server",
        "auth-provider",
        "exec-version",
    ],
)
def test_a_kubeconfig_that_cannot_be_used_says_why(
    tmp_path: Path, cfg: dict[str, Any], context: str | None, says: str
) -> None:
    with pytest.raises(KubeconfigError) as err:
        load_kubeconfig([_write(tmp_path / "config", cfg)], context)
    assert says in str(err.value)


def test_no_kubeconfig_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="no kubeconfig found"):
        load_kubeconfig([tmp_path / "none"])


def test_certificate_data_is_used_without_writing_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = write_pki(tmp_path / "pki")

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    cfg = kubeconfig_doc(
        {"c": {"server": "https://127.0.0.1:6443", "certificate-authority-data": b64(pki.ca_cert)}},
        {"u": {"client-certificate-data": b64(pki.serving_cert), "client-key-data": b64(pki.serving_key)}},
        {"x": ("c", "u")},
        "x",
    )
    path = _write(tmp_path / "config", cfg)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "no-such-dir"))  # no usable temporary directory

    def no_temp(*_: Any, **__: Any) -> Any:
        raise AssertionError("a temporary file was made")

    monkeypatch.setattr("tempfile.mkstemp", no_temp)
    monkeypatch.setattr("tempfile.NamedTemporaryFile", no_temp)
    creds = load_kubeconfig([path])
    assert creds.ca_path is None and creds.ca_data == pki.ca_cert.read_text()
    assert creds.cert_path is not None and creds.cert_path.startswith("/proc/self/fd/")
    ctx = creds.ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    assert any(c["subject"] == ((("commonName", "wideep-devcluster-ca"),),) for c in ctx.get_ca_certs())


def _plugin(tmp_path: Path, lifetime_s: float, api: str = "client.authentication.k8s.io/v1") -> Path:
    """An exec credential plugin that counts its calls and hands out token-<n>, valid ``lifetime_s``."""
    script = tmp_path / "plugin.py"
    script.write_text(
        f"""import datetime as dt, json, os, sys
calls = {str(tmp_path / "calls")!r}
n = len(open(calls).read().splitlines()) + 1 if os.path.exists(calls) else 1
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
open(calls, "a").write(json.dumps(info) + "\\n")
exp = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds={lifetime_s})).strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": {api!r}, "kind": "ExecCredential",
                  "status": {{"token": f"token-{{n}}-{{os.environ['EXTRA']}}", "expirationTimestamp": exp}}}}))
"""
    )
    return script


@pytest.mark.parametrize("api", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def test_an_exec_plugin_token_is_cached_until_it_expires(tmp_path: Path, api: str) -> None:
    import sys

    script = _plugin(tmp_path, 3600, api)
    cfg = kubeconfig_doc(
        {"c": {"server": "https://a:1"}},
        {
            "u": {
                "exec": {
                    "apiVersion": api,
                    "command": sys.executable,
                    "args": [str(script)],
                    "env": [{"name": "EXTRA", "value": "x"}],
                    "provideClusterInfo": True,
                }
            }
        },
        {"x": ("c", "u")},
        "x",
    )
    creds = load_kubeconfig([_write(tmp_path / "config", cfg)])
    assert creds.refreshable and creds.exec_tokens is not None
    assert creds.bearer() == "token-1-x"
    assert creds.bearer() == "token-1-x"  # cached
    assert creds.exec_tokens.fetches == 1
    assert creds.expiry is not None and creds.expiry > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=50)
    info = json.loads((tmp_path / "calls").read_text().splitlines()[0])
    assert info["apiVersion"] == api and info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == "https://a:1"  # provideClusterInfo
    creds.exec_tokens.get(refresh=True)  # the API server refused it: asked anew
    assert creds.bearer() == "token-2-x"


def test_an_expired_exec_token_is_fetched_again(tmp_path: Path) -> None:
    import sys

    script = _plugin(tmp_path, 1)  # expires within the skew: every use fetches anew
    cfg = kubeconfig_doc(
        {"c": {"server": "https://a:1"}},
        {
            "u": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": sys.executable,
                    "args": [str(script)],
                    "env": [{"name": "EXTRA", "value": "y"}],
                }
            }
        },
        {"x": ("c", "u")},
        "x",
    )
    creds = load_kubeconfig([_write(tmp_path / "config", cfg)])
    assert [creds.bearer(), creds.bearer()] == ["token-1-y", "token-2-y"]


def test_an_exec_plugin_that_fails_says_so(tmp_path: Path) -> None:
    cfg = kubeconfig_doc(
        {"c": {"server": "https://a:1"}},
        {
            "u": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "/no/such/plugin",
                    "installHint": "install it",
                }
            }
        },
        {"x": ("c", "u")},
        "x",
    )
    creds = load_kubeconfig([_write(tmp_path / "config", cfg)])
    with pytest.raises(KubeconfigError, match="not found; install it"):
        creds.bearer()
