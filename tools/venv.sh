#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and print its path.
# It lives outside the checkout, keyed by the Python version and the dependency
# pins, so every clone on this machine (CI's included) reuses it. It holds the
# dependencies only; the Makefile runs the code from ./operator (PYTHONPATH).
# A virtualenv without its COMPLETE stamp is half-built and gets rebuilt.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
cache="${WIDEEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wideep}"
key="$("$py" - "$here/pyproject.toml" "$here/tools/constraints.txt" <<'PY'
import hashlib, sys, tomllib
h = hashlib.sha256(sys.version.encode())
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
h.update(repr((project["dependencies"], project["optional-dependencies"]["dev"])).encode())
h.update(open(sys.argv[2], "rb").read())
print(h.hexdigest()[:12])
PY
)"
venv="$cache/venvs/py-$key"
if [[ ! -f "$venv/COMPLETE" ]]; then
  echo "[venv] creating $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache/venvs"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/python" - "$here/pyproject.toml" > "$venv/requirements.txt" <<'PY'
import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(list(data["dependencies"]) + list(data["optional-dependencies"]["dev"])))
PY
  "$venv/bin/pip" install -q -r "$venv/requirements.txt" -c "$here/tools/constraints.txt" >&2
  touch "$venv/COMPLETE"
  echo "[venv] ready" >&2
fi
echo "$venv"
