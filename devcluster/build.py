"""Build the local control plane from Go modules into a versioned cache folder.

Standard library only, so it runs before any virtualenv exists::

    python3 devcluster/build.py          # build or reuse
    python3 devcluster/build.py --print  # print the bin folder

Layout of the cache (``versions.cache_root()``)::

    controlplane/<key>/bin/{etcd,kube-apiserver,...}
    controlplane/<key>/stages/*.yaml           kwok stage files
    controlplane/<key>/COMPLETE                written last; its absence means "not built"
    controlplane/<key>.partial/                work in progress, removed on failure

kube-apiserver and friends cannot be ``go install``-ed: k8s.io/kubernetes maps
its staging modules to ``./staging/...`` with ``replace``. A small module here
requires k8s.io/kubernetes and replaces every staging module with its published
``v0.Y.Z`` twin; the list is read from the downloaded go.mod, never typed.
etcd's server module has the same problem (etcd-io/etcd#18501) and is built in
the same module. kwok and helm install with plain ``go install`` in their own
module graphs so their dependency versions do not leak into the kube build.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import versions  # type: ignore[import-not-found]
else:
    from . import versions

KWOK_STAGES = {
    # file name in the cache → path inside the kwok module
    "node-initialize.yaml": "kustomize/stage/node/fast/node-initialize.yaml",
    "node-heartbeat-with-lease.yaml": "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod-ready.yaml": "kustomize/stage/pod/fast/pod-ready.yaml",
    "pod-complete.yaml": "kustomize/stage/pod/fast/pod-complete.yaml",
    "pod-delete.yaml": "kustomize/stage/pod/fast/pod-delete.yaml",
    "pod-container-running-failed.yaml": "kustomize/stage/pod/chaos/pod-container-running-failed.yaml",
    "node-not-ready.yaml": "kustomize/stage/node/chaos/node-not-ready.yaml",
}


class BuildError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[cluster-build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CGO_ENABLED": "0",
            "GOTOOLCHAIN": "local",
            "GOWORK": "off",
            "GOFLAGS": "-mod=mod -buildvcs=false",
        }
    )
    return env


def run(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> str:
    log(f"{what}: {' '.join(cmd)}")
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env or go_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    log(f"{what}: done in {time.monotonic() - started:.0f}s")
    return proc.stdout


def require_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed or not on PATH. The local control plane is built from Go modules: "
            "install Go >= 1.26 (https://go.dev/doc/install, or Debian's golang-go if recent enough) "
            "and make sure the Go module proxy is reachable."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m or (int(m.group(1)), int(m.group(2))) < (1, 26):
        raise BuildError(f"Go {out} is too old: kubernetes {versions.KUBERNETES} needs go >= 1.26")
    return out


def download_json(module: str, cwd: Path) -> dict[str, str]:
    out = run(["go", "mod", "download", "-json", module], cwd, f"download {module}")
    data: dict[str, str] = json.loads(out)
    return data


def staging_replaces(gomod_text: str, minor_version: str) -> list[tuple[str, str]]:
    """Every ``X => ./staging/src/X`` replace of k8s.io/kubernetes's go.mod, mapped to X@minor_version."""
    out = []
    for m in re.finditer(r"^\s*(?:replace\s+)?(\S+)\s*=>\s*\./staging/\S+\s*$", gomod_text, re.M):
        out.append((m.group(1), minor_version))
    if not out:
        raise BuildError("found no staging replaces in k8s.io/kubernetes go.mod; its format changed")
    return out


def required_version(gomod_text: str, module: str) -> str | None:
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod_text, re.M)
    return m.group(1) if m else None


def build_kube(work: Path, bindir: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text("module wideep.dev/controlplane\n\ngo 1.26.0\n")
    meta = download_json(f"k8s.io/kubernetes@{versions.KUBERNETES}", work)
    kube_mod = Path(meta["GoMod"]).read_text()
    staging_version = "v0." + versions.KUBERNETES.removeprefix("v1.")
    replaces = staging_replaces(kube_mod, staging_version)
    etcd_req = required_version(kube_mod, "go.etcd.io/etcd/server/v3")
    if etcd_req != versions.ETCD:
        raise BuildError(
            f"k8s.io/kubernetes {versions.KUBERNETES} requires etcd server {etcd_req}, "
            f"but versions.ETCD is {versions.ETCD}; pin the one kubernetes requires"
        )
    go_line = re.search(r"^go (\S+)$", kube_mod, re.M)
    godebug = re.search(r"^godebug .*$", kube_mod, re.M)
    lines = [
        "module wideep.dev/controlplane",
        "",
        f"go {go_line.group(1) if go_line else '1.26.0'}",
        "",
    ]
    if godebug:
        lines += [godebug.group(0), ""]
    lines += [f"require k8s.io/kubernetes {versions.KUBERNETES}", ""]
    lines += ["replace ("] + [f"\t{mod} => {mod} {ver}" for mod, ver in replaces] + [")", ""]
    (work / "go.mod").write_text("\n".join(lines))
    log(f"go.mod: {len(replaces)} staging modules replaced with their {staging_version} releases")

    tools = [
        f"k8s.io/kubernetes/cmd/kube-apiserver@{versions.KUBERNETES}",
        f"k8s.io/kubernetes/cmd/kube-controller-manager@{versions.KUBERNETES}",
        f"k8s.io/kubernetes/cmd/kube-scheduler@{versions.KUBERNETES}",
        f"go.etcd.io/etcd/server/v3@{versions.ETCD}",
    ]
    run(["go", "get", "-tool", *tools], work, "resolve kubernetes + etcd module graph")

    kv = versions.KUBERNETES
    major, minor = kv.removeprefix("v").split(".")[:2]
    ldflags = " ".join(
        f"-X {pkg}.{key}={val}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, val in (
            ("gitVersion", kv),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        )
    )
    targets = [
        ("etcd", "go.etcd.io/etcd/server/v3"),
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
        ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
        ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ]
    for i, (name, pkg) in enumerate(targets, 1):
        run(
            [
                "go",
                "build",
                "-trimpath",
                "-tags",
                versions.BUILD_TAGS,
                "-ldflags",
                f"-s -w {ldflags}",
                "-o",
                str(bindir / name),
                pkg,
            ],
            work,
            f"[{i}/{len(targets)}] build {name} (module {pkg})",
        )


def install_tool(module_pkg: str, version: str, bindir: Path, work: Path, step: str) -> None:
    env = go_env()
    env["GOBIN"] = str(bindir)
    env["GOFLAGS"] = "-buildvcs=false"
    run(["go", "install", "-trimpath", "-ldflags", "-s -w", f"{module_pkg}@{version}"], work, step, env)


def copy_kwok_stages(stagedir: Path, work: Path) -> None:
    meta = download_json(f"sigs.k8s.io/kwok@{versions.KWOK}", work)
    src = Path(meta["Dir"])
    stagedir.mkdir(parents=True, exist_ok=True)
    for name, rel in KWOK_STAGES.items():
        path = src / rel
        if not path.exists():
            raise BuildError(f"kwok {versions.KWOK} has no stage file {rel}")
        shutil.copyfile(path, stagedir / name)


def cached_dir(go_version: str) -> Path:
    root: Path = versions.cache_root()
    return root / "controlplane" / str(versions.cache_key(go_version))


def is_complete(target: Path) -> bool:
    if not (target / "COMPLETE").exists():
        return False
    return all((target / "bin" / b).is_file() for b in versions.BINARIES)


def ensure_built(force: bool = False) -> Path:
    go_version = require_go()
    target = cached_dir(go_version)
    if is_complete(target) and not force:
        log(f"cached control plane is complete: {target}")
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    bindir = partial / "bin"
    bindir.mkdir(parents=True)
    started = time.monotonic()
    log(f"building the control plane into {target} (tens of minutes cold on 2 cores)")
    try:
        build_kube(partial / "kube-module", bindir)
        install_tool("sigs.k8s.io/kwok/cmd/kwok", versions.KWOK, bindir, partial, "[5/6] install kwok")
        copy_kwok_stages(partial / "stages", partial)
        install_tool("helm.sh/helm/v3/cmd/helm", versions.HELM, bindir, partial, "[6/6] install helm")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(partial / "kube-module", ignore_errors=True)
    (partial / "COMPLETE").write_text(
        json.dumps(
            {
                "kubernetes": versions.KUBERNETES,
                "etcd": versions.ETCD,
                "kwok": versions.KWOK,
                "helm": versions.HELM,
                "go": go_version,
                "seconds": round(time.monotonic() - started),
            }
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    log(f"control plane built in {time.monotonic() - started:.0f}s: {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is complete")
    parser.add_argument("--print", action="store_true", help="print the cache folder if built, else exit 1")
    args = parser.parse_args(argv)
    try:
        if args.print:
            target = cached_dir(require_go())
            if not is_complete(target):
                return 1
            print(target)
            return 0
        ensure_built(force=args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
