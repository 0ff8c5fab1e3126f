#!/usr/bin/env bash
# Set up what the chosen tests need, then run them.
#
#   scripts/test.sh                 # everything: lint, type check, every suite (what CI runs)
#   scripts/test.sh tests/unit      # the unit tests alone: seconds, no root, no tools
#   scripts/test.sh tests/core -q   # pytest arguments pass through
#
# Creates .venv with the package and its test extras. Only for the suites
# chosen, it installs the pinned external tools into .tools/bin (helm for
# tests/chart, csi-sanity for tests/conformance, the Kubernetes binaries for
# tests/e2e and tests/e2e_check, all three and the image for tests/e2e_helm, an OCI registry for
# tests/library, the benchmark's Go client for tests/bench) and starts a Docker
# engine when none runs (tests/image, tests/e2e_helm); a Docker
# engine it started is stopped at the end unless KEEP_DOCKER_ENGINE=1. Every
# suite but tests/unit mounts for real: it runs as root inside a private mount
# namespace, so every mount a test makes vanishes with it. Each setup step
# says what it does (and when it is skipped); the last line gives the time of
# each phase.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Which suites the arguments name (none: all of them).
suites=()
for arg in "$@"; do
    case "$arg" in
        tests) suites=(all); break ;;
        tests/*) suite="${arg#tests/}"; suites+=("${suite%%/*}") ;;
    esac
done
[[ ${#suites[@]} -gt 0 ]] || suites=(all)
wants() {
    local s
    for s in "${suites[@]}"; do [[ "$s" == all || "$s" == "$1" ]] && return 0; done
    return 1
}
only_unit=true
for s in "${suites[@]}"; do [[ "$s" == unit ]] || only_unit=false; done

if ! $only_unit && [[ "$(id -u)" != 0 ]]; then
    echo "scripts/test.sh: the tests do real bind mounts; run as root (tests/unit alone runs without)" >&2
    exit 1
fi

# phase NAME COMMAND...: run COMMAND and remember how long it took.
timings=()
phase() {
    local name="$1" started=$SECONDS rc=0
    shift
    echo "test.sh: == $name" >&2
    "$@" || rc=$?
    timings+=("$name $((SECONDS - started)) s")
    return $rc
}
summary() {
    local joined
    joined="$(printf '%s, ' "${timings[@]}")"
    echo "test.sh: time per phase: ${joined%, }" >&2
}

# A Docker engine this run started is stopped again (one already running is left alone).
dockerd_started="$PWD/.tools/dockerd.started"
stop_started_dockerd() {
    local pid
    pid="$(cat "$dockerd_started" 2>/dev/null || true)"
    rm -f "$dockerd_started"
    [[ -n "$pid" && "${KEEP_DOCKER_ENGINE:-0}" != 1 ]] || return 0
    echo "test.sh: stopping the Docker engine this run started (pid $pid; KEEP_DOCKER_ENGINE=1 keeps it)" >&2
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
}
trap stop_started_dockerd EXIT

phase "set up .venv" scripts/setup-dev.sh
if [[ $# -eq 0 ]]; then
    phase "lint and type check" scripts/lint.sh
fi
if $only_unit; then
    phase "tests" .venv/bin/python -m pytest "$@" || { rc=$?; summary; exit $rc; }
    summary
    exit 0
fi
mkdir -p .tools
if wants chart || wants e2e_helm; then phase "helm" scripts/install-helm.sh; fi
if wants conformance; then phase "csi-sanity" scripts/install-csi-sanity.sh >/dev/null; fi
# tests/bench runs bench/run.sh, whose kubelet-faithful caller is a Go program.
if wants bench; then phase "kubelet-client" scripts/build-kubelet-client.sh >/dev/null; fi
if wants library; then phase "OCI registry" scripts/install-registry.sh >/dev/null; fi
# The end-to-end suites' Kubernetes binaries (tests/e2e, tests/e2e_check and
# tests/e2e_helm start their own clusters with scripts/e2e-cluster.sh, which installs the Debian
# packages it needs).
if wants e2e || wants e2e_check || wants e2e_helm; then phase "Kubernetes binaries" scripts/build-kubernetes.sh; fi
# tests/e2e_helm builds the driver's image (scripts/e2e-driver-image.sh).
if wants image || wants e2e_helm; then
    # Started here, in the machine's mount namespace, rather than from inside
    # the suite's private one.
    export DOCKERD_STARTED_FILE="$dockerd_started"
    phase "Docker engine" scripts/docker-engine.sh ||
        echo "scripts/test.sh: no Docker engine could be started; the image tests will fail" >&2
fi
export PATH="$PWD/.tools/bin:$PATH"

# The machine's mount namespace, for the suite's guard where /proc/1 is unreadable.
export CSI_TESTS_HOST_MOUNT_NS="$(readlink /proc/self/ns/mnt)"
rc=0
phase "tests" unshare --mount --propagation private -- .venv/bin/python -m pytest "$@" || rc=$?
summary
exit $rc
