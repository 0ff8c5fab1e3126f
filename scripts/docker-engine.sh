#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine; start one if none does.
#
# Idempotent: when `docker info` already succeeds nothing is installed or started.
# Otherwise Debian's docker.io package is installed (root, apt-get) and dockerd is
# started in the background, logging to $DOCKERD_LOG. Several configurations are
# tried in order, the first that answers wins:
#   overlay2 + default bridge networking
#   overlay2 + no bridge, no iptables   (builds then need --network host)
#   vfs      + default bridge networking
#   vfs      + no bridge, no iptables
#
# Environment:
#   DOCKER_IO_VERSION   Debian docker.io version to install (falls back to the
#                       archive's candidate when that exact version is gone)
#   DOCKERD_LOG         dockerd log file           (default /var/log/dockerd.log)
#   DOCKERD_WAIT        seconds to wait per attempt (default 60)
#   DOCKERD_STORAGE_DRIVERS  space-separated order  (default "overlay2 vfs")
#   DOCKERD_NETWORK_MODES    space-separated order  (default "bridge none")
#   DOCKERD_DATA_ROOT        data root for overlay2 (default /var/lib/docker);
#                            other drivers use <it>-<driver>
#   DOCKERD_STARTED_FILE     when this script starts dockerd, its pid is written
#                            there, so the caller can stop what it started
set -euo pipefail

DOCKER_IO_VERSION="${DOCKER_IO_VERSION:-20.10.24+dfsg1-1+deb12u1+b6}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_WAIT="${DOCKERD_WAIT:-60}"
DOCKERD_STORAGE_DRIVERS="${DOCKERD_STORAGE_DRIVERS:-overlay2 vfs}"
DOCKERD_NETWORK_MODES="${DOCKERD_NETWORK_MODES:-bridge none}"
DOCKERD_DATA_ROOT="${DOCKERD_DATA_ROOT:-/var/lib/docker}"

log() { echo "docker-engine: $*" >&2; }

if docker info >/dev/null 2>&1; then
    log "engine already running ($(docker info --format '{{.ServerVersion}} {{.Driver}}' 2>/dev/null))"
    exit 0
fi

apt_install_pinned() {
    # apt_install_pinned PACKAGE VERSION: exact version if the archive still has it.
    local pkg="$1" version="$2"
    if apt-cache show "${pkg}=${version}" >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkg}=${version}"
    else
        log "WARNING: ${pkg}=${version} not in the archive, installing the candidate version"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkg}"
    fi
}

if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "ERROR: no Docker engine and cannot install one (needs root and apt-get)"
        exit 1
    fi
    log "installing docker.io ${DOCKER_IO_VERSION} from Debian (first run: about 1 minute)"
    apt-get update -qq
    apt_install_pinned docker.io "${DOCKER_IO_VERSION}" >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
    log "ERROR: starting dockerd needs root"
    exit 1
fi

# wait_until_answering PID: 0 once the engine answers; 1 when PID exits or
# DOCKERD_WAIT seconds pass first.
wait_until_answering() {
    local pid="$1"
    for _ in $(seq 1 $((DOCKERD_WAIT * 2))); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# stop_dockerd PID: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_dockerd() {
    local pid="$1"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
}

# A dockerd from /var/run/docker.pid that is alive but not answering may still be
# starting (another caller): give it the usual time, then stop it (by its pid).
settle_existing_dockerd() {
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    # The pid file outlives a killed dockerd and its pid may now be another
    # process's: only a process that really is dockerd is waited for or stopped.
    if [ -n "$pid" ] && [ "$(cat "/proc/${pid}/comm" 2>/dev/null)" = dockerd ]; then
        log "dockerd pid ${pid} exists but does not answer yet; waiting"
        if wait_until_answering "$pid"; then
            log "engine up (pid ${pid})"
            exit 0
        fi
        log "stopping unresponsive dockerd pid ${pid}"
        stop_dockerd "$pid"
    fi
    rm -f /var/run/docker.pid
}

# try_start STORAGE_DRIVER NETWORK_MODE(bridge|none): 0 when the engine answers.
try_start() {
    local driver="$1" net="$2" pid
    # One data root per storage driver: a driver switch must not meet the other
    # driver's layers (BuildKit's cache would point at missing directories).
    local root="$DOCKERD_DATA_ROOT"
    [ "$driver" = overlay2 ] || root="${DOCKERD_DATA_ROOT}-${driver}"
    local args=(--storage-driver "$driver" --data-root "$root")
    if [ "$net" = none ]; then
        args+=(--iptables=false --ip6tables=false --bridge=none)
    fi
    log "starting dockerd ${args[*]} (log: ${DOCKERD_LOG})"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    echo "=== $(date -u +%FT%TZ) dockerd ${args[*]}" >>"$DOCKERD_LOG"
    # Detached from this shell: no inherited stdio, its own session.
    setsid dockerd "${args[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1 &
    pid=$!
    if wait_until_answering "$pid"; then
        log "engine up (pid ${pid}, storage driver ${driver}, network ${net})"
        if [ -n "${DOCKERD_STARTED_FILE:-}" ]; then echo "$pid" >"$DOCKERD_STARTED_FILE"; fi
        return 0
    fi
    log "dockerd ${args[*]} did not answer; last log lines:"
    tail -n 15 "$DOCKERD_LOG" >&2 || true
    stop_dockerd "$pid"
    rm -f /var/run/docker.pid
    return 1
}

settle_existing_dockerd
for driver in $DOCKERD_STORAGE_DRIVERS; do
    for net in $DOCKERD_NETWORK_MODES; do
        if try_start "$driver" "$net"; then
            exit 0
        fi
    done
done
log "ERROR: could not start a Docker engine (see ${DOCKERD_LOG})"
exit 1
