#!/usr/bin/env bash
# The system programs some tests need, installed or reported the same way on a laptop and in CI:
#   nginx (load-balancer tests), chromium (browser tests), docker.io (the container tests: dockerd)
#   and debootstrap (the container tests build their base image offline).
# Missing ones are installed from Debian's packages when this user can (root, or sudo without a
# password); otherwise each is listed with its install command and the tests that need it skip
# with that reason (under REQUIRE_SYSTEM_BINARIES=1, as in CI, they fail instead). A Docker daemon
# that is not running is started in the background (no systemd needed), its log in $DOCKERD_LOG.
set -euo pipefail
DOCKERD_LOG="${DOCKERD_LOG:-${TMPDIR:-/tmp}/dataflow-gateway-dockerd.log}"

present() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root=(sudo -n); else as_root=(none); fi
fi

missing=()
for pair in nginx:nginx chromium:chromium dockerd:docker.io debootstrap:debootstrap; do
    present "${pair%%:*}" || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${as_root[*]-}" = none ]; then
        echo "== system binaries: MISSING ${missing[*]} (not root, no passwordless sudo). Install them with:" >&2
        echo "     sudo apt-get install --no-install-recommends ${missing[*]}" >&2
        echo "   until then the tests that need them are skipped (they fail under REQUIRE_SYSTEM_BINARIES=1)" >&2
    else
        echo "== system binaries: installing ${missing[*]}" >&2
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# The container tests need a running daemon, not just the client.
if present dockerd && ! docker info >/dev/null 2>&1; then
    if [ "${as_root[*]-}" = none ]; then
        echo "== docker: the daemon is not running and this user cannot start it (sudo dockerd &)" >&2
    else
        # A daemon that was killed (not stopped) leaves its pid files: dockerd refuses to start over
        # its own, and would wait for a containerd that is gone. Remove them unless they name a live one.
        for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
            [ -f "$pidfile" ] || continue
            pid="$(cat "$pidfile" 2>/dev/null || true)"
            state="$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)"
            name="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
            case "$name:$state" in
                dockerd:[!Z]* | containerd:[!Z]*) ;;  # alive: leave it
                *) "${as_root[@]}" rm -f "$pidfile" ;;
            esac
        done
        echo "== docker: starting dockerd (log: $DOCKERD_LOG)" >&2
        nohup "${as_root[@]}" dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
        daemon=$!
        for _ in $(seq 1 60); do  # bounded: 30 s, less if dockerd gives up
            docker info >/dev/null 2>&1 && break
            kill -0 "$daemon" 2>/dev/null || break
            sleep 0.5
        done
        docker info >/dev/null 2>&1 || { echo "== docker: dockerd did not come up; last lines of its log:" >&2; tail -n 20 "$DOCKERD_LOG" >&2; }
    fi
fi

status=()
for name in nginx chromium debootstrap; do
    if present "$name"; then status+=("$name ok"); else status+=("$name MISSING"); fi
done
if docker info >/dev/null 2>&1; then status+=("docker daemon ok"); else status+=("docker daemon MISSING"); fi
echo "== system binaries: ${status[*]}" >&2
