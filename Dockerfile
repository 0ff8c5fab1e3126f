# Container image of the Datadog CSI node driver (k8s.csi.datadoghq.com).
#
# Build:  scripts/build-image.sh   (or docker build with BuildKit, see below)
# BASE_IMAGE must be a Debian-based image with python3 >= 3.11 and its venv module;
# both stages must use the same one (the virtualenv links to its interpreter).
#
# Optional BuildKit secret `pip_cert`: a CA bundle for pip (TLS-intercepting
# proxies). It is mounted only while pip runs and is never stored in a layer.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: generate the gRPC stubs, build the wheels, install into a venv ---
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY . .
RUN --mount=type=secret,id=pip_cert,required=false \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    python3 -m venv /opt/datadog-csi-driver; \
    venv=/opt/datadog-csi-driver; \
    "$venv/bin/pip" wheel --wheel-dir /wheels .; \
    "$venv/bin/pip" install --no-index --find-links /wheels --no-compile datadog-csi-driver; \
    "$venv/bin/pip" uninstall -y -q pip setuptools; \
    find "$venv" -name __pycache__ -prune -exec rm -rf {} +; \
    "$venv/bin/python" -m compileall -q -j0 --invalidation-mode unchecked-hash "$venv/lib"; \
    "$venv/bin/python" -c 'from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc'

# --- runtime: the interpreter from BASE_IMAGE and the venv, nothing else ---
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="datadog-csi-driver" \
      org.opencontainers.image.description="Kubernetes CSI node driver (k8s.csi.datadoghq.com) that publishes the Datadog Agent's DogStatsD and APM Unix sockets into pods without hostPath volumes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# Read-only root filesystem at run time: nothing may try to write bytecode.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/datadog-csi-driver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY --from=build /opt/datadog-csi-driver /opt/datadog-csi-driver
# Bytecode for the standard library too (some base images ship none), then a
# smoke check that the entry point starts.
RUN python3 -m compileall -q -j0 "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \
    && datadog-csi-driver --version
WORKDIR /
# mount(2) needs root (CAP_SYS_ADMIN); the DaemonSet runs the container privileged.
USER 0:0
ENTRYPOINT ["datadog-csi-driver"]
