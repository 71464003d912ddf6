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
# The build backend too: the image builds the project's wheel with --no-index.
"$python" -m pip wheel --quiet --prefer-binary --wheel-dir "$wheelhouse" . "setuptools>=69" wheel >&2
rm -f "$wheelhouse"/dataflow_gateway-*.whl  # the image builds its own from the sources it copies
docker build --quiet --file deploy/Dockerfile --build-arg "PYTHON_IMAGE=$base" --tag "$tag" . >&2
echo "$tag"
