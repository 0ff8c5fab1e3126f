#!/usr/bin/env bash
# Install a pinned Helm into <repo>/.tools/bin/helm.
#
# Helm is built from source through the Go module proxy because prebuilt
# release binaries cannot be downloaded here. Re-running is cheap: the build
# is skipped when the pinned version is already installed.
set -euo pipefail

HELM_VERSION="v3.19.0"
# Kubernetes version Helm assumes when no cluster is asked (`helm template`,
# `helm lint`). Helm's own release build derives it from the client-go it
# vendors (v0.34.x for Helm v3.19.0, hence 1.34); a plain `go install` would
# leave Helm's fallback of 1.20, which is older than the chart's kubeVersion.
HELM_K8S_MAJOR="1"
HELM_K8S_MINOR="34"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
helm_bin="${bin_dir}/helm"
# Records how the binary was built, so that a Helm of the right version but
# built differently (another Kubernetes default) is rebuilt too.
stamp_file="${bin_dir}/.helm-build"
build_id="helm ${HELM_VERSION} kubernetes ${HELM_K8S_MAJOR}.${HELM_K8S_MINOR}"

installed_version() {
    # `helm version --template` prints just the semantic version, e.g. v3.19.0.
    "${helm_bin}" version --template '{{ .Version }}' 2>/dev/null || true
}

if [[ -x "${helm_bin}" && "$(installed_version)" == "${HELM_VERSION}" \
      && "$(cat "${stamp_file}" 2>/dev/null)" == "${build_id}" ]]; then
    echo "install-helm: helm ${HELM_VERSION} already built (skipped)" >&2
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' is required to build helm ${HELM_VERSION}" >&2
    exit 1
fi

mkdir -p "${bin_dir}"
echo "install-helm: building helm ${HELM_VERSION} into ${bin_dir} with go install (first run: 3-10 minutes on 2 CPUs)" >&2
# Version stamps are set through ldflags the way Helm's Makefile sets them;
# without them `helm version` reports a development placeholder (so the
# check above could never match) and the default Kubernetes version is 1.20.
ldflags=(
    "-s" "-w"
    "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${HELM_K8S_MAJOR}"
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${HELM_K8S_MINOR}"
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${HELM_K8S_MAJOR}"
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${HELM_K8S_MINOR}"
)
GOBIN="${bin_dir}" CGO_ENABLED=0 go install -trimpath \
    -ldflags "${ldflags[*]}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"

actual="$(installed_version)"
if [[ "${actual}" != "${HELM_VERSION}" ]]; then
    echo "error: built helm reports version '${actual}', expected ${HELM_VERSION}" >&2
    exit 1
fi
echo "${build_id}" >"${stamp_file}"
echo "install-helm: installed helm ${actual} at ${helm_bin}" >&2
