#!/usr/bin/env bash
# Builds the gateway's image with no image registry and no network inside the build: the base is
# debootstrapped and imported (scripts/docker_base_image.sh, cached by tag), the dependencies'
# wheels come from this machine's package index through pip (its own index settings and
# certificates) into deploy/wheelhouse/, and deploy/Dockerfile installs them with --no-index.
#
#   bash scripts/build_image.sh [TAG]      # default dataflow-gateway:local; prints the tag
#
# PYTHON selects the interpreter whose pip gathers the wheels (default python3, 3.11+). The wheels
# are chosen for the base image's Python (bookworm: CPython 3.11, glibc 2.36, this machine's
# architecture), whatever Python runs pip.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-dataflow-gateway:local}"
python="${PYTHON:-python3}"

base="$(bash scripts/docker_base_image.sh)"
wheelhouse=deploy/wheelhouse
rm -f "$wheelhouse"/*.whl
log="$(mktemp "${TMPDIR:-/tmp}/dataflow-gateway-image.XXXXXX.log")"
requirements="$(mktemp "${TMPDIR:-/tmp}/dataflow-gateway-requirements.XXXXXX.txt")"
trap 'rm -f "$log" "$requirements"' EXIT
fail() { echo "$1 failed; its output:" >&2; tail -n 40 "$log" >&2; exit 1; }
# The project's dependencies (from pyproject.toml) and its build backend, as binary wheels for the
# base image's interpreter: manylinux up to bookworm's glibc 2.36.
"$python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >"$requirements"
printf '%s\n' "setuptools>=69" wheel >>"$requirements"
arch="$(uname -m)"
platforms=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
"$python" -m pip download --only-binary=:all: --python-version 3.11 --implementation cp "${platforms[@]}" \
    --dest "$wheelhouse" --requirement "$requirements" >"$log" 2>&1 || fail "pip download"
docker build --file deploy/Dockerfile --build-arg "PYTHON_IMAGE=$base" --tag "$tag" . >"$log" 2>&1 ||
    fail "docker build"
# Earlier builds of this image (and their build stages) are left untagged: reclaim their space.
docker image prune --force --filter label=org.opencontainers.image.title=dataflow-gateway >/dev/null
echo "$tag"
