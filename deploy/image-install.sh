#!/bin/sh
# Installs orderwatch into a fresh virtualenv the way the image does: build the wheel from the
# source tree, install it with the `rocksdb` extra under the lock (constraints.txt), nothing else.
# deploy/Dockerfile runs this file, and tests/deploy runs it too in a temporary virtualenv, so what
# CI checks is the image's install step itself.
#
#   deploy/image-install.sh SOURCE_DIR VENV_DIR
set -eu

src="$1"
venv="$2"
wheels="$(mktemp -d)"
tree="$(mktemp -d)"

# Build from a clean copy: setuptools reuses a build/ folder left in the source tree, and a stale
# one would put modules that no longer exist (or the old top-level packages) into the wheel.
tar -C "$src" --exclude=./.venv --exclude=./.local --exclude=./.git --exclude=./build --exclude=./out \
    --exclude='./*.egg-info' -cf - . | tar -C "$tree" -xf -

python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --constraint "$src/constraints.txt" --upgrade pip
"$venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$wheels" "$tree"
# One wheel: orderwatch's own. Its dependencies come from the index, each pinned by the lock.
"$venv/bin/pip" install --quiet --constraint "$src/constraints.txt" "$(ls "$wheels"/orderwatch-*.whl)[rocksdb]"
"$venv/bin/pip" check
rm -rf "$wheels" "$tree"
