#!/usr/bin/env bash
# Install csi-sanity (kubernetes-csi/csi-test, the CSI conformance suite) into
# <repo>/.tools/bin/csi-sanity, built from source through the Go module proxy.
#
# Idempotent: if the binary is already there and was built from the pinned
# version, nothing is done. Set CSI_SANITY_FORCE=1 to rebuild anyway.
#
# Usage: scripts/install-csi-sanity.sh        (prints the binary's path)
# Env:   CSI_SANITY_VERSION  override the pinned version (default below)
#        CSI_SANITY_FORCE=1  rebuild even if the pinned binary is present
set -euo pipefail

CSI_SANITY_VERSION="${CSI_SANITY_VERSION:-v5.6.0}"
MODULE="github.com/kubernetes-csi/csi-test/v5"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
bin="${bin_dir}/csi-sanity"

if ! command -v go >/dev/null 2>&1; then
    echo "install-csi-sanity: 'go' is not on PATH; install Go (>= 1.25) first" >&2
    exit 1
fi

# The module version a Go binary was built from, read from its embedded build info.
built_version() {
    go version -m "$1" 2>/dev/null | awk -v m="${MODULE}" '$1 == "mod" && $2 == m { print $3; exit }'
}

if [[ -x "${bin}" && "${CSI_SANITY_FORCE:-0}" != "1" ]]; then
    if [[ "$(built_version "${bin}")" == "${CSI_SANITY_VERSION}" ]]; then
        echo "install-csi-sanity: csi-sanity ${CSI_SANITY_VERSION} already built (skipped)" >&2
        echo "${bin}"
        exit 0
    fi
fi

mkdir -p "${bin_dir}"
echo "install-csi-sanity: building ${MODULE}/cmd/csi-sanity@${CSI_SANITY_VERSION} with $(go env GOVERSION) (first run: 1-2 minutes)" >&2
# Build outside the repo so no go.mod/go.work of ours can interfere, and with
# GOFLAGS cleared so a caller's -mod=vendor or similar can't either. Only the Go
# module proxy is needed: sources come from the proxy, not from GitHub.
(
    cd "${TMPDIR:-/tmp}"
    GOBIN="${bin_dir}" GOFLAGS= GOWORK=off GO111MODULE=on \
        go install "${MODULE}/cmd/csi-sanity@${CSI_SANITY_VERSION}"
)

got="$(built_version "${bin}")"
if [[ "${got}" != "${CSI_SANITY_VERSION}" ]]; then
    echo "install-csi-sanity: ${bin} reports version '${got}', expected ${CSI_SANITY_VERSION}" >&2
    exit 1
fi
echo "${bin}"
