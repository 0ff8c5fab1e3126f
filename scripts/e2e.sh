#!/usr/bin/env bash
# The end-to-end suite alone: builds (or reuses) kube-apiserver and kubelet,
# starts a single-node cluster from real components under a temporary
# directory, runs tests/e2e against it, and stops and removes the cluster
# whatever happened (the suite's session fixture; Ctrl-C and SIGTERM included).
#
#   scripts/e2e.sh [pytest args...]      e.g. scripts/e2e.sh -k restricted -v
#
# The full test command (scripts/test.sh, .ci/run) runs this suite too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec scripts/test.sh tests/e2e "$@"
