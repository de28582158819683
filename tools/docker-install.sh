#!/bin/sh
# Build the wideep wheel from the source tree SRC and install it, with every dependency pinned by
# tools/constraints.txt and from wheels only, into a new virtualenv DEST that has no pip, setuptools or
# wheel of its own.
#
#   sh tools/docker-install.sh SRC DEST
#
# The Dockerfile's builder stage runs exactly this; tests/chart/test_dockerfile.py runs it too, so the
# install that the image gets is the one the tests check. PYTHON picks the interpreter (default python3).
set -eu
src=$(cd "$1" && pwd)
dest=$2
py=${PYTHON:-python3}
constraints="$src/tools/constraints.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A throwaway build environment with the pinned build backend (pyproject's build-system.requires).
"$py" -m venv "$work/build"
"$work/build/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" setuptools wheel
"$work/build/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  --wheel-dir "$work/dist" "$src"

# The runtime environment: created without pip; the build environment's pip installs into it.
"$py" -m venv --without-pip "$dest"
"$work/build/bin/python" -m pip --python "$dest/bin/python" install --quiet --disable-pip-version-check \
  --only-binary=:all: -c "$constraints" "$work"/dist/wideep-*.whl
"$dest/bin/wideep" --version
