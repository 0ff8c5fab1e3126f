#!/usr/bin/env bash
# A flame graph of the driver under kubelet-faithful load (see bench/profile.py).
#
#   bench/profile.sh [OUT.svg] [--callers N] [--seconds S]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "$(id -u)" != 0 ]]; then
    echo "bench/profile.sh: the driver does real bind mounts; run it as root" >&2
    exit 1
fi
if [[ -z "${CSI_BENCH_HOST_MOUNT_NS:-}" ]]; then
    [[ -x .venv/bin/python ]] || scripts/setup-dev.sh
    CSI_BENCH_KUBELET_CLIENT="$(scripts/build-kubelet-client.sh)"
    CSI_BENCH_HOST_MOUNT_NS="$(readlink /proc/self/ns/mnt)"
    export CSI_BENCH_KUBELET_CLIENT CSI_BENCH_HOST_MOUNT_NS
    exec unshare --mount --propagation private -- "$0" "$@"
fi
exec .venv/bin/python -m bench.profile "$@"
