#!/usr/bin/env bash
# Build a local Python base image from Debian packages, for when the default base
# image (python:3.11-slim-bookworm) cannot be pulled from a registry.
#
# debootstrap (bookworm, minbase) + python3 python3-venv python3-pip, upgraded
# from bookworm-updates and bookworm-security, docs/caches/apt lists removed,
# then `docker import`ed. Bookworm's python3 is 3.11.
#
# Usage: scripts/build-base-image.sh [TAG]      (prints the tag on stdout)
# An existing local image with that tag is reused unless REBUILD_BASE_IMAGE=1.
#
# Environment:
#   DEBIAN_MIRROR            default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR   default http://deb.debian.org/debian-security
#   DEBOOTSTRAP_VERSION      Debian debootstrap version to install if missing
set -euo pipefail

TAG="${1:-${LOCAL_BASE_IMAGE:-datadog-csi-driver-base:bookworm-python3.11}}"
SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
DEBOOTSTRAP_VERSION="${DEBOOTSTRAP_VERSION:-1.0.128+nmu2+deb12u2}"
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

log() { echo "build-base-image: $*" >&2; }

if [ "${REBUILD_BASE_IMAGE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "reusing existing local image ${TAG}"
    echo "$TAG"
    exit 0
fi

log "building ${TAG} with debootstrap (first run: 2-5 minutes; reused afterwards)"
if [ "$(id -u)" != 0 ]; then
    log "ERROR: debootstrap needs root"
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap ${DEBOOTSTRAP_VERSION}"
    apt-get update -qq
    if apt-cache show "debootstrap=${DEBOOTSTRAP_VERSION}" >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "debootstrap=${DEBOOTSTRAP_VERSION}" >/dev/null
    else
        log "WARNING: debootstrap=${DEBOOTSTRAP_VERSION} not in the archive, installing the candidate"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
    fi
fi

WORK="$(mktemp -d /var/tmp/csi-base-image.XXXXXX)"
ROOTFS="$WORK/rootfs"
cleanup() {
    # Never leave a mount behind inside the tree that is about to be deleted.
    for m in "$ROOTFS/proc" "$ROOTFS/dev/pts"; do
        if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
    done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

start=$SECONDS
log "debootstrap ${SUITE} (minbase + ${PACKAGES}) from ${DEBIAN_MIRROR}"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" \
        >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    log "ERROR: debootstrap failed"
    exit 1
fi

cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb ${DEBIAN_MIRROR} ${SUITE} main
deb ${DEBIAN_MIRROR} ${SUITE}-updates main
deb ${DEBIAN_SECURITY_MIRROR} ${SUITE}-security main
EOF
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$ROOTFS/proc"

log "applying ${SUITE}-updates and ${SUITE}-security"
chroot "$ROOTFS" apt-get update -qq
chroot "$ROOTFS" env DEBIAN_FRONTEND=noninteractive \
    apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade >"$WORK/upgrade.log" 2>&1 \
    || { tail -n 30 "$WORK/upgrade.log" >&2; log "ERROR: upgrade failed"; exit 1; }
chroot "$ROOTFS" apt-get clean
umount "$ROOTFS/proc"

# Slim the tree: no apt lists/caches, docs, man pages, translations, logs.
rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/resolv.conf"
rm -rf "$ROOTFS/debootstrap" \
       "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# Packages installed later on top of this image stay slim too.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

python_version="$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
log "importing rootfs ($(du -sh "$ROOTFS" | cut -f1), python ${python_version}) as ${TAG}"
tar --numeric-owner --xattrs -C "$ROOTFS" -c . | docker import \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["python3"]' \
    -c "LABEL org.opencontainers.image.description=\"Debian ${SUITE} minbase with python3 ${python_version}\"" \
    -m "debootstrap ${SUITE} minbase + ${PACKAGES}" \
    - "$TAG" >/dev/null
log "built ${TAG} in $((SECONDS - start))s"
echo "$TAG"
