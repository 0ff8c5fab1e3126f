#!/usr/bin/env bash
# Build the benchmark's kubelet-faithful CSI client (bench/kubelet-client/)
# with `go build`, its modules pinned by its go.mod and go.sum and fetched
# through the Go module proxy. Prints the binary's path.
#
# The binary is kept under .tools/kubelet-client/<hash>/, the hash taken over
# go.mod, go.sum and main.go: a rerun with the same sources skips the build,
# and a changed source gets a binary of its own.
#
# Usage: scripts/build-kubelet-client.sh
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${repo_root}/bench/kubelet-client"

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
if [[ ! -x "$go_bin" ]]; then
    echo "build-kubelet-client: 'go' is not on PATH nor at /usr/local/go/bin/go; install Go (>= 1.25) first" >&2
    exit 1
fi

hash="$(cat "${src}/go.mod" "${src}/go.sum" "${src}/main.go" | sha256sum | cut -c1-16)"
out_dir="${repo_root}/.tools/kubelet-client/${hash}"
bin="${out_dir}/kubelet-client"
if [[ -x "$bin" ]]; then
    echo "build-kubelet-client: built from these sources already (skipped)" >&2
    echo "$bin"
    exit 0
fi

echo "build-kubelet-client: building bench/kubelet-client with $("$go_bin" env GOVERSION) (first run: under a minute)" >&2
mkdir -p "$out_dir"
# Exactly the go.mod's versions, checked against go.sum, whatever the
# caller's Go settings: no workspace, no vendoring, no toolchain switch, and
# a build that never edits go.mod or go.sum.
(
    cd "$src"
    GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local GO111MODULE=on \
        "$go_bin" build -trimpath -o "${bin}.partial" .
)
mv "${bin}.partial" "$bin"
# Binaries of earlier sources are not used again.
find "${repo_root}/.tools/kubelet-client" -mindepth 1 -maxdepth 1 -type d ! -name "$hash" -exec rm -rf {} +
echo "$bin"
