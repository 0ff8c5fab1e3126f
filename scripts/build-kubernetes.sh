#!/usr/bin/env bash
# Build the Kubernetes components the end-to-end suite runs, at a pinned
# version, from the k8s.io/kubernetes module on the Go module proxy.
#
#   scripts/build-kubernetes.sh            # binaries in .tools/kubernetes/<version>/
#
# kube-apiserver and kubelet run in every end-to-end cluster; kube-scheduler and
# kube-controller-manager only in one started with --with-controllers (what a
# DaemonSet needs). One go build makes all four: they share most packages.
#
# Cached by version: a second run with the binaries present does nothing.
# A cold build takes 12-30 minutes on 2 CPUs and about 4 GB of Go build cache.
#
# The module's go.mod points every k8s.io staging module at ./staging/...,
# which the module zip does not contain; each such replace is rewritten to
# the published module of the matching version (v0.<minor>.<patch>).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
COMPONENTS=(kube-apiserver kubelet kube-scheduler kube-controller-manager)
OUT="$PWD/.tools/kubernetes/$K8S_VERSION"

have_all() {
    local c
    for c in "${COMPONENTS[@]}"; do [[ -x "$OUT/$c" ]] || return 1; done
}
if have_all; then
    echo "build-kubernetes: ${COMPONENTS[*]} $K8S_VERSION already built in $OUT (skipped)" >&2
    exit 0
fi
command -v go >/dev/null || { echo "build-kubernetes: Go is required (go build)" >&2; exit 1; }

staging_version="v0.${K8S_VERSION#v1.}"
work="$(mktemp -d "${TMPDIR:-/tmp}/k8s-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "build-kubernetes: building ${COMPONENTS[*]} $K8S_VERSION (first run: 6-30 minutes on 2 CPUs, with an empty Go build cache)" >&2
started=$SECONDS
module_dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
cp -r "$module_dir" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"
rm -f go.work go.work.sum

replaces=()
while read -r module; do
    replaces+=("-replace=$module=$module@$staging_version")
done < <(go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])')
go mod edit "${replaces[@]}"
echo "build-kubernetes: ${#replaces[@]} staging modules pinned to $staging_version" >&2

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
mkdir -p "$OUT.partial"
targets=()
for c in "${COMPONENTS[@]}"; do targets+=("./cmd/$c"); done
GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT.partial/" \
    "${targets[@]}"
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
"$OUT/kubelet" --version >&2
echo "build-kubernetes: done in $((SECONDS - started)) s" >&2
