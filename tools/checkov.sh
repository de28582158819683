#!/usr/bin/env bash
# Install (or reuse) the pinned checkov, the security scanner of the rendered Helm chart, and print the
# path of its executable. It lives in its own virtualenv outside the checkout, in the versioned cache
# folder, so it never touches the project's dependencies. A half-built one (no COMPLETE stamp) is rebuilt.
set -euo pipefail
version="3.3.30"
py="${PYTHON:-python3}"
cache="${WIDEEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wideep}"
venv="$cache/tools/checkov-$version"
if [[ ! -f "$venv/COMPLETE" ]]; then
  echo "[checkov] installing checkov $version into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache/tools"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "checkov==$version" >&2
  touch "$venv/COMPLETE"
fi
echo "$venv/bin/checkov"
