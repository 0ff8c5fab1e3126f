#!/usr/bin/env bash
# Build the driver's container image from this repository.
#
#   1. make sure a Docker engine runs (scripts/docker-engine.sh)
#   2. pick the base image: $BASE_IMAGE if set, else python:3.11-slim-bookworm when
#      it is present or can be pulled, else a local Debian base built by
#      scripts/build-base-image.sh (reused on later runs)
#   3. docker build with BuildKit, passing the host's CA bundle to pip as a secret
#
# Usage: scripts/build-image.sh [TAG]   (default datadog-csi-driver:<version>)
# Progress goes to stderr; the last stdout line is the image tag.
#
# Environment: BASE_IMAGE, DEFAULT_BASE_IMAGE, DOCKER_BUILD_NETWORK (default: host
# when the engine has no bridge network), PIP_CERT (CA bundle for pip inside the
# build; default: the host's /etc/ssl/certs/ca-certificates.crt when present).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_BASE_IMAGE="${DEFAULT_BASE_IMAGE:-python:3.11-slim-bookworm}"

log() { echo "build-image: $*" >&2; }

"$ROOT/scripts/docker-engine.sh" >&2

VERSION="$(cd "$ROOT" && python3 -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print(tomllib.load(f)["project"].get("version", "unknown"))
' 2>/dev/null || echo unknown)"
TAG="${1:-${IMAGE:-datadog-csi-driver:${VERSION}}}"

if [ -z "${BASE_IMAGE:-}" ]; then
    if docker image inspect "$DEFAULT_BASE_IMAGE" >/dev/null 2>&1; then
        BASE_IMAGE="$DEFAULT_BASE_IMAGE"
    elif timeout 180 docker pull -q "$DEFAULT_BASE_IMAGE" >/dev/null 2>&1; then
        BASE_IMAGE="$DEFAULT_BASE_IMAGE"
    else
        log "cannot pull ${DEFAULT_BASE_IMAGE}; using a local Debian base image"
        BASE_IMAGE="$("$ROOT/scripts/build-base-image.sh" | tail -n 1)"
    fi
fi
log "base image: ${BASE_IMAGE}"

# The Dockerfile needs BuildKit (RUN --mount). Docker CLIs from 23 on provide it
# through the buildx plugin only; older CLIs (Debian's docker.io 20.10) have it
# built in behind DOCKER_BUILDKIT=1.
build_cmd=()
if docker buildx version >/dev/null 2>&1; then
    build_cmd=(docker build)
else
    for cli in $(type -ap docker); do
        v="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)"
        if [ -n "$v" ] && [ "${v%%.*}" -lt 23 ] 2>/dev/null; then
            build_cmd=(env DOCKER_BUILDKIT=1 "$cli" build)
            break
        fi
    done
fi
if [ "${#build_cmd[@]}" -eq 0 ]; then
    log "ERROR: no Docker client with BuildKit (install the buildx plugin)"
    exit 1
fi

args=(--progress=plain -f "$ROOT/Dockerfile" -t "$TAG"
      --build-arg "BASE_IMAGE=${BASE_IMAGE}"
      --build-arg "VERSION=${VERSION}")
if git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1; then
    revision="$(git -C "$ROOT" rev-parse HEAD)"
    [ -z "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] || revision="${revision}-dirty"
    # The commit's time, not the wall clock, so rebuilds of one commit hit the cache.
    args+=(--build-arg "REVISION=${revision}"
           --build-arg "CREATED=$(git -C "$ROOT" log -1 --format=%cI)")
fi

network="${DOCKER_BUILD_NETWORK:-}"
if [ -z "$network" ] && ! docker network inspect bridge >/dev/null 2>&1; then
    network=host
fi
[ -z "$network" ] || args+=(--network "$network")

cert="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
[ ! -s "$cert" ] || args+=(--secret "id=pip_cert,src=${cert}")

log "${build_cmd[*]} ${args[*]} ${ROOT}"
start=$SECONDS
"${build_cmd[@]}" "${args[@]}" "$ROOT" >&2
elapsed=$((SECONDS - start))

size="$(docker image inspect -f '{{.Size}}' "$TAG")"
log "image ${TAG}: size $(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }') (${size} bytes), built in ${elapsed}s on ${BASE_IMAGE}"
echo "$TAG"
