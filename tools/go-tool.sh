#!/usr/bin/env bash
# Build a Go tool from its module once per machine and version, and print the path of its binary.
#
#   tools/go-tool.sh NAME PACKAGE VERSION      e.g. tools/go-tool.sh actionlint github.com/rhysd/actionlint/cmd/actionlint v1.7.7
#
# The binary lives outside the checkout, keyed by name and version ($WIDEEP_CACHE_DIR, default
# ~/.cache/wideep/tools/NAME-VERSION/NAME), so every clone on the machine (CI's included) reuses it. A build
# that did not finish leaves nothing behind; concurrent callers wait for one another (flock).
set -euo pipefail
name="$1" pkg="$2" version="$3"
cache="${WIDEEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wideep}/tools"
dir="$cache/$name-$version"
mkdir -p "$cache"
exec 9>"$cache/.$name-$version.lock"
flock 9
if [[ ! -x "$dir/$name" ]]; then
  echo "[go-tool] building $name $version from $pkg (once per machine)" >&2
  start=$(date +%s)
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  GOBIN="$dir.partial" CGO_ENABLED=0 GOFLAGS="-trimpath" go install -ldflags "-s -w" "$pkg@$version" >&2
  [[ -x "$dir.partial/$name" ]] || { echo "[go-tool] $pkg@$version built no binary named $name" >&2; exit 1; }
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  echo "[go-tool] $name $version built in $(( $(date +%s) - start ))s" >&2
fi
echo "$dir/$name"
