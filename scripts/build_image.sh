#!/usr/bin/env bash
# Builds the gateway's image with no image registry and no network inside the build: the base is
# debootstrapped and imported (scripts/docker_base_image.sh, cached by tag), the dependencies'
# wheels come from this machine's package index through pip (its own index settings and
# certificates) into deploy/wheelhouse/, and deploy/Dockerfile installs them with --no-index.
#
#   bash scripts/build_image.sh [TAG]      # default dataflow-gateway:local; prints the tag
#
# PYTHON selects the interpreter whose pip gathers the wheels (default python3; its Python version
# and platform must match the base image's: CPython 3.11 on Linux x86_64/glibc).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-dataflow-gateway:local}"
python="${PYTHON:-python3}"

base="$(bash scripts/docker_base_image.sh)"
wheelhouse=deploy/wheelhouse
rm -f "$wheelhouse"/*.whl
log="$(mktemp "${TMPDIR:-/tmp}/dataflow-gateway-image.XXXXXX.log")"
trap 'rm -f "$log"' EXIT
fail() { echo "$1 failed; its output:" >&2; tail -n 40 "$log" >&2; exit 1; }
# The build backend too: the image builds the project's wheel with --no-index.
"$python" -m pip wheel --prefer-binary --wheel-dir "$wheelhouse" . "setuptools>=69" wheel >"$log" 2>&1 ||
    fail "pip wheel"
rm -f "$wheelhouse"/dataflow_gateway-*.whl  # the image builds its own from the sources it copies
docker build --file deploy/Dockerfile --build-arg "PYTHON_IMAGE=$base" --tag "$tag" . >"$log" 2>&1 ||
    fail "docker build"
# Earlier builds of this image (and their build stages) are left untagged: reclaim their space.
docker image prune --force --filter label=org.opencontainers.image.title=dataflow-gateway >/dev/null
echo "$tag"
