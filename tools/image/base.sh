#!/usr/bin/env bash
# The recipe of the LOCAL stand-in for the Dockerfile's base image (python:3.11.14-slim-bookworm), for
# machines that reach Debian and PyPI but no container registry. Writes a root filesystem tarball:
#
#   tools/image/base.sh OUT.tar
#
# tools/image.sh runs it only when this file changed (the sha256 of this file is the cache key of the whole
# private image store), imports the tarball with `podman import` and tags it with the Dockerfile's base name,
# so the unchanged Dockerfile builds FROM it with --pull=never.
#
# What the Dockerfile needs from its base, and how this one provides it (as the official image does):
#   python, python3 -m venv      Debian bookworm's python3 (3.11, not the image's 3.11.14 patch release),
#                                python3-venv (its ensurepip wheels), python-is-python3
#   python -m pip uninstall      pip and setuptools installed into /usr/local/lib/python3.11/dist-packages from
#     pip setuptools wheel       Debian's own wheels (/usr/share/python-wheels, no download), and no
#                                EXTERNALLY-MANAGED marker: like the official image, which installs pip
#                                outside the distribution's packages. (No wheel: uninstalling it is a no-op.)
#   groupadd, useradd            passwd
#   TLS trust for pip            ca-certificates (Debian's bundle; Debian's pip reads the system bundle)
# Docs, man pages and locales are left out as in debian:bookworm-slim (copyright files are kept: SBOMs
# read licenses from them), and /usr is merged by symlinks as there, not by the usrmerge package (which
# would bring perl, ~50 MB).
set -euo pipefail
out="$1"
mirror="${WIDEEP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${WIDEEP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

# The hooks are run by mmdebstrap's shell with the root filesystem as $1: single-quoted on purpose.
# shellcheck disable=SC2016
mmdebstrap \
  --variant=minbase \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,python-is-python3,passwd,ca-certificates \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/groff/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED' \
  --customize-hook='whl=$(echo "$1"/usr/share/python-wheels/pip-*.whl) && chroot "$1" python3 "${whl#"$1"}/pip" \
    install --quiet --no-index --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
    --find-links /usr/share/python-wheels pip setuptools' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/root/.cache' \
  bookworm "$out" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main"
