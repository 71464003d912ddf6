#!/usr/bin/env bash
# Builds the container base image without any image registry: a debootstrap of Debian bookworm
# (minbase + python3, venv and pip) from the Debian mirror apt already uses, imported with
# `docker import`. deploy/Dockerfile takes it as build argument PYTHON_IMAGE.
#
#   bash scripts/docker_base_image.sh [TAG [PACKAGES]]   # prints the tag; reuses an existing image
#
# PACKAGES (comma-separated) replaces the default python3,python3-venv,python3-pip,ca-certificates:
# the container tests build their nginx image the same way (nginx,gettext-base).
#
# The image is cached by tag: a re-run with the image present does nothing (about 0.1 s). Set
# REBUILD_BASE_IMAGE=1 to build it again. Needs root (debootstrap), debootstrap and a Docker daemon.
set -euo pipefail
tag="${1:-dataflow-gateway-base:bookworm-python3}"
packages="${2:-python3,python3-venv,python3-pip,ca-certificates}"

if [ "${REBUILD_BASE_IMAGE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

# The mirror apt uses for bookworm (deb822 .sources first, then one-line lists), else Debian's own.
mirror_from_apt() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        # deb822 stanzas are separated by blank lines: the first URI of a stanza whose suites name bookworm.
        awk 'BEGIN { RS = ""; FS = "\n" }
             /Suites:[^\n]*bookworm([ \n]|$)/ && /Types:[^\n]*deb([ \n]|$)/ {
                 for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, f, " "); print f[2]; exit }
             }' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i + 1) == "bookworm") print $i; break } }' "$file"
    done
}
mirror="${DEBIAN_MIRROR:-$(mirror_from_apt | head -n 1)}"
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d "${TMPDIR:-/tmp}/dataflow-gateway-rootfs.XXXXXX")"
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror into $root" >&2
debootstrap --variant=minbase --include="$packages" \
    bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Package lists and downloaded .debs are not needed at run time.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*

tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    - "$tag" >/dev/null
echo "$tag"
