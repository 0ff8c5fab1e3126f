#!/usr/bin/env bash
# Build the two container images the end-to-end cluster runs, from local files
# only (no registry is reachable), and import them into the cluster's containerd.
#
#   scripts/e2e-images.sh [--build-only] [--address SOCKET] [--snapshotter NAME] DIR
#
#   DIR/images/pause.tar   localhost/e2e/pause:1   pod sandbox: sleeps until SIGTERM/SIGINT
#   DIR/images/app.tar     localhost/e2e/app:1     busybox-static + /bin/dd-send, user 65532
#
# The tarballs are OCI image layouts made by tests/e2e/images/oci_layout.py.
# They are cached in $E2E_IMAGE_CACHE (default .tools/e2e-images/<inputs hash>/),
# so a second run with the same sources, busybox and Go is a copy.
#
# Without --build-only both are imported into the containerd at SOCKET
# (default DIR/containerd/containerd.sock, the layout of scripts/e2e-cluster.sh),
# namespace k8s.io, unpacked for SNAPSHOTTER (default overlayfs).
# The image names are printed as NAME=reference lines on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tests/e2e/images"
PAUSE_IMAGE="localhost/e2e/pause:1"
APP_IMAGE="localhost/e2e/app:1"
APP_UID=65532
CACHE_ROOT="${E2E_IMAGE_CACHE:-$ROOT/.tools/e2e-images}"
WORK=""
trap 'rm -rf "$WORK"' EXIT

log() { echo "e2e-images: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    echo "usage: $0 [--build-only] [--address SOCKET] [--snapshotter NAME] DIR" >&2
    exit 2
}

# find_busybox: path of a statically linked busybox (the app image has no libc).
find_busybox() {
    local bb
    for bb in /bin/busybox /usr/bin/busybox; do
        [[ -x "$bb" ]] || continue
        # ldd exits 1 on a static binary; only its message matters.
        if [[ "$(LC_ALL=C ldd "$bb" 2>&1 || true)" == *"not a dynamic executable"* ]]; then
            echo "$bb"
            return 0
        fi
    done
    die "no static busybox found (install the Debian package busybox-static)"
}

# inputs_hash BUSYBOX: one digest over everything that goes into the images.
inputs_hash() {
    local busybox="$1"
    {
        (cd "$SRC" && find . -type f \( -name '*.go' -o -name go.mod -o -name '*.py' \) -print0 |
            sort -z | xargs -0 sha256sum)
        sha256sum "$ROOT/scripts/e2e-images.sh" "$busybox"
        go version
        go env GOARCH
        echo "$PAUSE_IMAGE $APP_IMAGE $APP_UID"
    } | sha256sum | cut -c1-16
}

# build_go_binaries OUT: the static pause and dd-send programs.
build_go_binaries() {
    local out="$1"
    # GOTOOLCHAIN=local: never try to download another Go toolchain.
    (cd "$SRC" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
        go build -trimpath -ldflags '-s -w' -o "$out/" ./pause ./dd-send)
}

# pause_rootfs BIN ROOTFS: only the pause binary.
pause_rootfs() {
    local bin="$1" rootfs="$2"
    mkdir -p "$rootfs"
    install -m 0755 "$bin/pause" "$rootfs/pause"
}

# app_rootfs BIN BUSYBOX ROOTFS: busybox with its applet links, dd-send, and
# passwd/group entries so `id` names the non-root user.
app_rootfs() {
    local bin="$1" busybox="$2" rootfs="$3" applet
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,home/nonroot}
    install -m 1777 -d "$rootfs/tmp"
    install -m 0755 "$busybox" "$rootfs/bin/busybox"
    while read -r applet; do
        [[ "$applet" == bin/busybox ]] && continue
        mkdir -p "$rootfs/$(dirname "$applet")"
        ln -sf /bin/busybox "$rootfs/$applet"
    done < <("$busybox" --list-full)
    install -m 0755 "$bin/dd-send" "$rootfs/bin/dd-send"
    printf '%s\n' "root:x:0:0:root:/root:/bin/sh" \
        "nonroot:x:$APP_UID:$APP_UID:nonroot:/home/nonroot:/bin/sh" >"$rootfs/etc/passwd"
    printf '%s\n' "root:x:0:" "nonroot:x:$APP_UID:" >"$rootfs/etc/group"
}

# build_images CACHE_DIR BUSYBOX: both tarballs into CACHE_DIR (atomically:
# built in a temporary directory beside it, then renamed).
build_images() {
    local cache="$1" busybox="$2" work arch
    work="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
    WORK="$work"  # removed by the EXIT trap when the build fails half-way
    arch="$(go env GOARCH)"
    build_go_binaries "$work/bin"
    pause_rootfs "$work/bin" "$work/pause-rootfs"
    app_rootfs "$work/bin" "$busybox" "$work/app-rootfs"
    mkdir -p "$work/out"
    python3 "$SRC/oci_layout.py" --rootfs "$work/pause-rootfs" --name "$PAUSE_IMAGE" \
        --out "$work/out/pause.tar" --user 65535:65535 --entrypoint '["/pause"]' --arch "$arch" >&2
    python3 "$SRC/oci_layout.py" --rootfs "$work/app-rootfs" --name "$APP_IMAGE" \
        --out "$work/out/app.tar" --user "$APP_UID:$APP_UID" --cmd '["sh"]' --arch "$arch" \
        --env PATH=/bin:/sbin:/usr/bin:/usr/sbin --env HOME=/home/nonroot >&2
    rm -rf "$cache"
    mv "$work/out" "$cache"
    rm -rf "$work"
}

# import_image SOCKET SNAPSHOTTER TARBALL: load into the CRI namespace, unpacked.
import_image() {
    local socket="$1" snapshotter="$2" tarball="$3"
    ctr --address "$socket" --namespace k8s.io images import \
        --snapshotter "$snapshotter" "$tarball" >/dev/null
}

main() {
    local build_only=0 socket="" snapshotter=overlayfs dir=""
    while (($#)); do
        case "$1" in
            --build-only) build_only=1 ;;
            --address) socket="${2:?}"; shift ;;
            --snapshotter) snapshotter="${2:?}"; shift ;;
            -h | --help) usage ;;
            -*) usage ;;
            *) [[ -z "$dir" ]] || usage; dir="$1" ;;
        esac
        shift
    done
    [[ -n "$dir" ]] || usage
    command -v go >/dev/null || die "Go is required to build the pause and dd-send programs"
    command -v python3 >/dev/null || die "python3 is required (tests/e2e/images/oci_layout.py)"

    local busybox key cache
    busybox="$(find_busybox)"
    key="$(inputs_hash "$busybox")"
    cache="$CACHE_ROOT/$key"
    mkdir -p "$CACHE_ROOT" "$dir/images"
    # One builder at a time per cache; a waiting one then finds the result.
    exec {lock}>"$CACHE_ROOT/.lock"
    flock "$lock"
    if [[ -f "$cache/pause.tar" && -f "$cache/app.tar" ]]; then
        log "images cached ($key)"
    else
        log "building images ($key)"
        build_images "$cache" "$busybox"
        # Earlier inputs' images are never used again.
        find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build.*' -exec rm -rf {} +
    fi
    flock -u "$lock"
    local name
    for name in pause app; do
        ln -f "$cache/$name.tar" "$dir/images/$name.tar" 2>/dev/null ||
            cp -f "$cache/$name.tar" "$dir/images/$name.tar"
    done

    if ((!build_only)); then
        socket="${socket:-$dir/containerd/containerd.sock}"
        [[ -S "$socket" ]] || die "no containerd socket at $socket (start the cluster, or use --build-only)"
        command -v ctr >/dev/null || die "ctr is missing (Debian package containerd)"
        for name in pause app; do import_image "$socket" "$snapshotter" "$dir/images/$name.tar"; done
        log "imported $PAUSE_IMAGE and $APP_IMAGE into $socket"
    fi
    echo "PAUSE_IMAGE=$PAUSE_IMAGE"
    echo "APP_IMAGE=$APP_IMAGE"
}

main "$@"
