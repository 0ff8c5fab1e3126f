#!/usr/bin/env bash
# Set up everything the test suite needs, then run it.
#
#   scripts/test.sh [pytest args...]
#
# Creates .venv with the package and its test extras, installs the pinned
# external tools (helm, csi-sanity) into .tools/bin, starts a Docker engine
# when none runs (for the image tests), then runs pytest as root
# inside a private mount namespace so every mount a test makes vanishes with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "$(id -u)" != 0 ]]; then
    echo "scripts/test.sh: the tests do real bind mounts; run as root (e.g. sudo scripts/test.sh)" >&2
    exit 1
fi

scripts/setup-dev.sh
scripts/install-helm.sh >/dev/null
scripts/install-csi-sanity.sh >/dev/null
# The image tests need a Docker engine; start it here, in the machine's mount
# namespace, rather than from inside the suite's private one.
scripts/docker-engine.sh || echo "scripts/test.sh: no Docker engine could be started; the image tests will fail" >&2
export PATH="$PWD/.tools/bin:$PATH"

# The machine's mount namespace, for the suite's guard where /proc/1 is unreadable.
export CSI_TESTS_HOST_MOUNT_NS="$(readlink /proc/self/ns/mnt)"
exec unshare --mount --propagation private -- .venv/bin/python -m pytest "$@"
