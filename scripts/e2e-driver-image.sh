#!/usr/bin/env bash
# The driver's own container image, in the end-to-end cluster's containerd, for
# tests that install the chart rather than run the driver as a host process.
#
#   scripts/e2e-driver-image.sh DIR     (DIR: a cluster started by scripts/e2e-cluster.sh up)
#
# Builds the image with scripts/build-image.sh (Docker's build cache makes a
# second build of unchanged sources take seconds; the first one on a machine
# without the base image takes about 6 minutes), saves it to DIR/images/, and
# imports it into the cluster's containerd (namespace k8s.io), unpacked for
# the cluster's snapshotter. The kubelet can then start it with
# imagePullPolicy Never or IfNotPresent.
#
# Environment: E2E_DRIVER_IMAGE, the reference to build and import (default
# localhost/e2e/datadog-csi-driver:dev). Prints DRIVER_IMAGE=<reference> on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${E2E_DRIVER_IMAGE:-localhost/e2e/datadog-csi-driver:dev}"

log() { echo "e2e-driver-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

(($# == 1)) || { echo "usage: $0 DIR" >&2; exit 2; }
DIR="$1"
[[ -f "$DIR/env" ]] || die "no cluster is up in $DIR (no $DIR/env)"
env_value() { sed -n "s/^$1=//p" "$DIR/env"; }
socket="$(env_value CONTAINERD_ADDRESS)"
namespace="$(env_value CONTAINERD_NAMESPACE)"
snapshotter="$(env_value SNAPSHOTTER)"
[[ -S "$socket" ]] || die "no containerd socket at '$socket'"

started=$SECONDS
"$ROOT/scripts/build-image.sh" "$IMAGE" >/dev/null
built=$SECONDS

# The image ID names the tarball: a tarball of the same image is not saved again.
id="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
tarball="$DIR/images/driver-${id#sha256:}.tar"
mkdir -p "$DIR/images"
if [[ ! -f "$tarball" ]]; then
    rm -f "$DIR"/images/driver-*.tar
    docker save -o "$tarball.partial" "$IMAGE"
    mv "$tarball.partial" "$tarball"
fi
saved=$SECONDS
ctr --address "$socket" --namespace "${namespace:-k8s.io}" images import \
    --snapshotter "${snapshotter:-overlayfs}" "$tarball" >/dev/null
log "$IMAGE (${id:7:12}): built in $((built - started)) s, saved in $((saved - built)) s," \
    "imported in $((SECONDS - saved)) s"
echo "DRIVER_IMAGE=$IMAGE"
