#!/usr/bin/env bash
# Set up what the chosen tests need, then run them.
#
#   scripts/test.sh                 # everything: lint, type check, every suite (what CI runs)
#   scripts/test.sh tests/unit      # the unit tests alone: seconds, no root, no tools
#   scripts/test.sh tests/core -q   # pytest arguments pass through
#
# Creates .venv with the package and its test extras. Only for the suites
# chosen, it installs the pinned external tools into .tools/bin (helm for
# tests/chart, csi-sanity for tests/conformance, kube-apiserver and kubelet for
# tests/e2e) and starts a Docker engine when none runs (tests/image). Every suite but tests/unit mounts for real: it
# runs as root inside a private mount namespace, so every mount a test makes
# vanishes with it.
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

scripts/setup-dev.sh
if [[ $# -eq 0 ]]; then
    scripts/lint.sh
fi
if $only_unit; then
    exec .venv/bin/python -m pytest "$@"
fi
if wants chart; then scripts/install-helm.sh >/dev/null; fi
if wants conformance; then scripts/install-csi-sanity.sh >/dev/null; fi
# The end-to-end suite's kube-apiserver and kubelet (tests/e2e starts its own
# cluster with scripts/e2e-cluster.sh, which installs the Debian packages it needs).
if wants e2e; then scripts/build-kubernetes.sh; fi
if wants image; then
    # Started here, in the machine's mount namespace, rather than from inside
    # the suite's private one.
    scripts/docker-engine.sh || echo "scripts/test.sh: no Docker engine could be started; the image tests will fail" >&2
fi
export PATH="$PWD/.tools/bin:$PATH"

# The machine's mount namespace, for the suite's guard where /proc/1 is unreadable.
export CSI_TESTS_HOST_MOUNT_NS="$(readlink /proc/self/ns/mnt)"
exec unshare --mount --propagation private -- .venv/bin/python -m pytest "$@"
