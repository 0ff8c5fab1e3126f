#!/usr/bin/env bash
# Install a pinned OCI registry (the CNCF distribution registry, as Debian
# packages it: docker-registry) into <repo>/.tools/bin/docker-registry, for the
# tests in tests/library, which start it on loopback.
#
# The package is downloaded with apt and unpacked into .tools/ rather than
# installed: nothing is added to the machine (no service, no system user).
# Idempotent: skipped when the pinned version is already there.
#
# Usage: scripts/install-registry.sh         (prints the binary's path)
# Env:   REGISTRY_DEB_VERSION  override the pinned package version (default below)
set -euo pipefail

REGISTRY_DEB_VERSION="${REGISTRY_DEB_VERSION:-2.8.2+ds1-1}"
PACKAGE="docker-registry"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
bin="${bin_dir}/docker-registry"
stamp_file="${bin_dir}/.docker-registry-version"

if [[ -x "${bin}" && "$(cat "${stamp_file}" 2>/dev/null)" == "${REGISTRY_DEB_VERSION}" ]]; then
    echo "install-registry: ${PACKAGE} ${REGISTRY_DEB_VERSION} already installed (skipped)" >&2
    echo "${bin}"
    exit 0
fi

for tool in apt-get dpkg-deb; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
        echo "install-registry: '${tool}' is required (a Debian-based machine)" >&2
        exit 1
    fi
done

workdir="$(mktemp -d)"
trap 'rm -rf "${workdir}"' EXIT
download() {
    # Run as root, apt drops to its _apt user to download, which cannot write
    # into a private temporary directory: download as the caller instead.
    (cd "${workdir}" && apt-get download -q -o APT::Sandbox::User="$(id -un)" \
        "${PACKAGE}=${REGISTRY_DEB_VERSION}" >&2)
}
echo "install-registry: downloading ${PACKAGE} ${REGISTRY_DEB_VERSION} (about 5 MB)" >&2
if ! download; then
    echo "install-registry: not in the package lists; running apt-get update" >&2
    apt-get update -q >&2 || true
    if ! download; then
        echo "install-registry: apt cannot provide ${PACKAGE}=${REGISTRY_DEB_VERSION}; it offers:" >&2
        apt-cache policy "${PACKAGE}" >&2 || true
        echo "install-registry: set REGISTRY_DEB_VERSION to one of those versions" >&2
        exit 1
    fi
fi

dpkg-deb -x "${workdir}"/${PACKAGE}_*.deb "${workdir}/root"
mkdir -p "${bin_dir}"
install -m 0755 "${workdir}/root/usr/bin/docker-registry" "${bin}"

# Debian's version (2.8.2+ds1-1) starts with the upstream one the binary reports.
upstream="${REGISTRY_DEB_VERSION%%+*}"
upstream="${upstream%%-*}"
reported="$("${bin}" --version)"
if [[ "${reported}" != *" ${upstream}"* ]]; then
    echo "install-registry: ${bin} reports '${reported}', expected version ${upstream}" >&2
    exit 1
fi
echo "${REGISTRY_DEB_VERSION}" >"${stamp_file}"
echo "install-registry: installed ${reported} at ${bin}" >&2
echo "${bin}"
