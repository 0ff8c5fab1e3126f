#!/usr/bin/env bash
# Benchmark publish/unpublish against the syscall floor, as the mount table fills.
#
#   bench/run.sh [--quick]
#
# Sets up .venv (scripts/setup-dev.sh; skipped when CSI_BENCH_SKIP_SETUP=1 and
# the venv exists), the Go kubelet-faithful client (scripts/build-kubelet-client.sh)
# and the OCI registry the library rows pull from (scripts/install-registry.sh),
# then re-runs itself as root inside a private mount
# namespace: every mount it makes, including the thousands of filler mounts,
# disappears with that namespace. Prints one table; see bench/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "$(id -u)" != 0 ]]; then
    echo "bench/run.sh: the benchmark does real bind mounts; run it as root" >&2
    exit 1
fi

if [[ -z "${CSI_BENCH_HOST_MOUNT_NS:-}" ]]; then
    if [[ "${CSI_BENCH_SKIP_SETUP:-}" != 1 || ! -x .venv/bin/python ]]; then
        scripts/setup-dev.sh
    fi
    # The kubelet-faithful caller and no-op Go server (skipped when built from these sources).
    CSI_BENCH_KUBELET_CLIENT="$(scripts/build-kubelet-client.sh)"
    export CSI_BENCH_KUBELET_CLIENT
    # The registry the library rows pull from (skipped when the pinned version is installed).
    scripts/install-registry.sh >/dev/null
    # The driver's bytecode, as the image ships it (Dockerfile): with
    # PYTHONDONTWRITEBYTECODE set, every start would otherwise recompile each
    # module edited since its last compile, and the cold-start rows would time that.
    .venv/bin/python -m compileall -q csi_driver bench
    CSI_BENCH_HOST_MOUNT_NS="$(readlink /proc/self/ns/mnt)"
    export CSI_BENCH_HOST_MOUNT_NS
    exec unshare --mount --propagation private -- "$0" "$@"
fi

if [[ "$(readlink /proc/self/ns/mnt)" == "$CSI_BENCH_HOST_MOUNT_NS" ]]; then
    echo "bench/run.sh: not in a private mount namespace; refusing to mount" >&2
    exit 1
fi
exec .venv/bin/python -m bench "$@"
