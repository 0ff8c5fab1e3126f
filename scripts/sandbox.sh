#!/usr/bin/env bash
# Set up the driver and run it on a local sandbox: a temporary kubelet root,
# demo agent sockets, one volume of each type published, used and unpublished.
#
#   scripts/sandbox.sh [--serve] [--metrics-port N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-dev.sh
exec .venv/bin/datadog-csi-driver sandbox "$@"
