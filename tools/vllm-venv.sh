#!/usr/bin/env bash
# Create (or reuse) a virtualenv with the real vLLM 0.11.1 from PyPI (and the torch it pins),
# outside the checkout, and print its path. Used by the test that parses rendered args with
# vLLM's own parser and by the preflight tests (torch.distributed with Gloo). Its pins clash
# with ours, so it is separate from the project virtualenv. Large (torch + CUDA wheels):
# built once per machine and version, marked COMPLETE when whole.
set -euo pipefail
py="${PYTHON:-python3}"
VLLM_VERSION="${VLLM_VERSION:-0.11.1}"
cache="${WIDEEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wideep}"
venv="$cache/venvs/vllm-$VLLM_VERSION-$("$py" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
if [[ ! -f "$venv/COMPLETE" ]]; then
  echo "[vllm-venv] creating $venv (downloads torch; several GB, once per machine)" >&2
  rm -rf "$venv"
  mkdir -p "$cache/venvs"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install --progress-bar off "vllm==$VLLM_VERSION" >&2
  touch "$venv/COMPLETE"
  echo "[vllm-venv] ready" >&2
fi
echo "$venv"
