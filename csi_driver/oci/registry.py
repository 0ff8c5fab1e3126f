"""Resolving an image reference to this node's manifest, and downloading its layers.

A tag is resolved with the registry's manifest endpoint, asking for OCI and
Docker indexes and manifests alike; an index leads to the entry for this
node's platform. Whatever names a digest (the reference, an index entry, a
layer) is checked against the bytes received, as is its size. Blobs stream to
the caller's file in bounded chunks, never whole in memory; a blob larger
than the caller's limit is refused before it is requested.

Every call is bounded by the caller's deadline (a ``time.monotonic()`` value)
and makes its own connections, so one client serves any number of threads.
``RegistryClient.abort`` ends every call in progress and refuses later ones:
a stopping driver must not wait for a slow registry.
Nothing is retried here beyond re-authenticating once: the kubelet retries the
whole publish, and an UNAVAILABLE status tells it to.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

import grpc

from csi_driver import __version__
from csi_driver.oci.auth import Credentials, TokenCache, authorization, denied, parse_challenges, registry_key
from csi_driver.oci.errors import RegistryError
from csi_driver.oci.manifests import (
    ACCEPT,
    DIGEST,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Index,
    Manifest,
    ManifestInvalid,
    host_platform,
    host_variant,
    parse,
    select,
)
from csi_driver.oci.reference import DOCKER_HUB, ImageReference
from csi_driver.oci.transport import Connections, Reply, Url, is_loopback

__all__ = ["Blob", "Credentials", "Image", "RegistryClient", "RegistryError"]

_CHUNK = 1 << 20
_MAX_REDIRECTS = 5
# An index may point at another index; deeper than this is refused.
_MAX_INDEX_DEPTH = 2
_MAX_ERROR_BODY = 16 << 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
_USER_AGENT = f"datadog-csi-driver/{__version__}"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Image:
    digest: str  # the manifest's digest for this node's platform
    layers: tuple[Blob, ...]
    # The digest of the index the reference led to, when it led to one (None
    # for a reference to a single manifest): what a digest reference may name.
    index_digest: str | None = None


def _api_origin(registry: str) -> str:
    """``scheme://host[:port]`` of a registry's API: Docker Hub's lives on another host."""
    host = "registry-1.docker.io" if registry_key(registry) == DOCKER_HUB else registry
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return f"{'http' if is_loopback(name) else 'https'}://{host}"


def _error_detail(reply: Reply) -> str:
    """The registry's own error code and message, from its JSON error body, for messages."""
    try:
        body = reply.read_all(_MAX_ERROR_BODY) or b""
    except RegistryError:
        return ""
    try:
        errors = json.loads(body).get("errors")
        first = errors[0] if isinstance(errors, list) and errors else {}
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return ""
    return f" ({_UNPRINTABLE.sub(' ', text)[:200]})" if text else ""


class _Pull:
    """One call's requests for one image: its connections, authorization and messages."""

    def __init__(self, client: RegistryClient, ref: ImageReference, deadline: float) -> None:
        self.client = client
        self.ref = ref
        self.subject = str(ref)
        self.connections = Connections(self.subject, deadline, client.timeout)
        self.origin = _api_origin(ref.registry)
        self.login = client.credentials.login_for(ref.registry)
        self.key = (registry_key(ref.registry), ref.repository)

    def __enter__(self) -> _Pull:
        self.client._track(self.connections)
        self.connections.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connections.__exit__(None, None, None)
        self.client._untrack(self.connections)

    def error(self, code: grpc.StatusCode, text: str) -> RegistryError:
        return RegistryError(code, f"{self.subject}: {text}")

    def url(self, kind: str, reference: str) -> Url:
        return Url.parse(f"{self.origin}/v2/{self.ref.repository}/{kind}/{reference}")

    def _send(self, url: Url, headers: Mapping[str, str], authorization_value: str | None) -> Reply:
        sent = {"User-Agent": _USER_AGENT, **headers}
        if authorization_value is not None:
            sent["Authorization"] = authorization_value
        return self.connections.request("GET", url, sent)

    def _authorized_get(self, url: Url, headers: Mapping[str, str]) -> Reply:
        tokens = self.client.tokens
        cached = tokens.get(self.key)
        reply = self._send(url, headers, cached)
        if reply.status != 401:
            return reply
        challenges = parse_challenges(reply.headers("WWW-Authenticate"))
        reply.discard()
        if cached is not None:
            tokens.drop(self.key, cached)  # expired or revoked
        value, lifetime = authorization(self.connections, challenges, self.ref.registry, self.login,
                                        f"repository:{self.ref.repository}:pull")
        tokens.put(self.key, value, lifetime)
        reply = self._send(url, headers, value)
        if reply.status == 401:
            reply.close()
            tokens.drop(self.key, value)
            raise denied(self.connections, self.ref.registry, self.login)
        return reply

    def get(self, url: Url, headers: Mapping[str, str]) -> Reply:
        """GET, following redirects; authorization goes to the registry's own origin only
        (blob downloads are often redirected to a storage service with a signed URL)."""
        registry_origin = Url.parse(self.origin + "/").origin
        for _ in range(_MAX_REDIRECTS + 1):
            if url.origin == registry_origin:
                reply = self._authorized_get(url, headers)
            else:
                reply = self._send(url, headers, None)
            if reply.status not in _REDIRECTS:
                return reply
            location = reply.header("Location") or ""
            reply.discard()
            try:
                url = url.join(location)
            except ValueError as err:
                raise self.error(grpc.StatusCode.FAILED_PRECONDITION, f"the registry redirected to an unusable "
                                 f"location: {err}") from None
        raise self.error(grpc.StatusCode.FAILED_PRECONDITION, f"more than {_MAX_REDIRECTS} redirects")

    def check(self, reply: Reply, what: str) -> None:
        status = reply.status
        if 200 <= status < 300:
            return
        detail = _error_detail(reply)
        registry = self.ref.registry
        if status == 404:
            raise self.error(grpc.StatusCode.NOT_FOUND, f"{what} not found in {registry}{detail}")
        if status in (401, 403):
            raise self.error(grpc.StatusCode.PERMISSION_DENIED,
                             f"{registry} denied access to {what} (HTTP {status}){detail}")
        code = grpc.StatusCode.UNAVAILABLE if status == 429 or status >= 500 else grpc.StatusCode.FAILED_PRECONDITION
        raise self.error(code, f"{registry} answered HTTP {status} for {what}{detail}")

    def _manifest_bytes(self, reference: str, what: str) -> tuple[bytes, str, str | None]:
        reply = self.get(self.url("manifests", reference), {"Accept": ACCEPT})
        try:
            self.check(reply, what)
            body = reply.read_all(MAX_MANIFEST_BYTES)
            announced = reply.header("Content-Length") or ""
            content_type = reply.header("Content-Type") or ""
            announced_digest = reply.header("Docker-Content-Digest")
        finally:
            reply.close()
        if body is None:
            raise self.error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"{what} is larger than {MAX_MANIFEST_BYTES >> 20} MiB, more than any image needs")
        if announced.isdigit() and len(body) < int(announced):
            raise self.error(grpc.StatusCode.DATA_LOSS,
                             f"{what}: the registry sent {len(body)} of {announced} bytes and stopped")
        return body, content_type, announced_digest

    def manifest(self, reference: str, expected: Descriptor | None) -> tuple[str, Index | Manifest]:
        """The digest and contents of a manifest or index, checked against what named it."""
        what = f"manifest {reference}" if DIGEST.fullmatch(reference) else f"tag {reference!r}"
        body, content_type, announced_digest = self._manifest_bytes(reference, what)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        for claimed in (reference, announced_digest):
            if claimed is not None and DIGEST.fullmatch(claimed) and claimed != digest:
                raise self.error(grpc.StatusCode.DATA_LOSS,
                                 f"{what}: the registry sent content whose digest is {digest}, not {claimed}")
        if expected is not None and len(body) != expected.size:
            raise self.error(grpc.StatusCode.DATA_LOSS, f"{what} is {len(body)} bytes, its index says {expected.size}")
        try:
            return digest, parse(body, content_type)
        except ManifestInvalid as err:
            raise self.error(grpc.StatusCode.FAILED_PRECONDITION, f"{what} cannot be used: {err}") from None

    def resolve(self) -> Image:
        digest, document = self.manifest(self.ref.manifest_reference, None)
        index_digest: str | None = None
        for _ in range(_MAX_INDEX_DEPTH + 1):
            if isinstance(document, Manifest):
                layers = tuple(Blob(layer.digest, layer.size, layer.media_type) for layer in document.layers)
                return Image(digest, layers, index_digest)
            os_name, architecture = self.client.platform
            entry = select(document, os_name, architecture, self.client.variant)
            if entry is None:
                offered = sorted({d.platform for d in document.manifests if d.platform})
                listed = ", ".join(offered[:12]) + (", ..." if len(offered) > 12 else "") or "none"
                raise self.error(grpc.StatusCode.FAILED_PRECONDITION,
                                 f"the image has no manifest for this node's platform "
                                 f"{'/'.join(self.client.platform)} (it has: {listed})")
            index_digest = index_digest or digest
            digest, document = self.manifest(entry.digest, entry)
        raise self.error(grpc.StatusCode.FAILED_PRECONDITION,
                         f"image indexes nested more than {_MAX_INDEX_DEPTH} deep")

    def fetch_blob(self, blob: Blob, out: BinaryIO) -> None:
        what = f"layer {blob.digest}"
        reply = self.get(self.url("blobs", blob.digest), {})
        try:
            self.check(reply, what)
            announced = reply.header("Content-Length") or ""
            if announced.isdigit() and int(announced) != blob.size:
                raise self.error(grpc.StatusCode.DATA_LOSS,
                                 f"{what}: the registry announces {announced} bytes, the manifest says {blob.size}")
            self._copy(reply, blob, out, what)
        finally:
            reply.close()

    def _copy(self, reply: Reply, blob: Blob, out: BinaryIO, what: str) -> None:
        hasher = hashlib.sha256()
        received = 0
        while chunk := reply.read_some(_CHUNK):
            received += len(chunk)
            if received > blob.size:
                raise self.error(grpc.StatusCode.DATA_LOSS,
                                 f"{what}: the registry sent more than the {blob.size} bytes the manifest says")
            hasher.update(chunk)
            out.write(chunk)
        if received < blob.size:
            raise self.error(grpc.StatusCode.DATA_LOSS,
                             f"{what}: the download stopped after {received} of {blob.size} bytes")
        digest = "sha256:" + hasher.hexdigest()
        if digest != blob.digest:
            raise self.error(grpc.StatusCode.DATA_LOSS,
                             f"{what}: the content received has digest {digest}: corrupted or tampered")


class RegistryClient:
    """Pulls from OCI registries; one instance is shared by every thread of the driver."""

    def __init__(self, credentials: Credentials, *, platform: tuple[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.platform = platform or host_platform()  # (os, architecture) in OCI's terms
        self.variant = host_variant() if platform is None else ""
        self.timeout = timeout  # the longest any one network wait may take, within a call's deadline
        self.tokens = TokenCache()
        self._lock = threading.Lock()
        self._live: set[Connections] = set()
        self._aborted: str | None = None

    def abort(self, reason: str) -> None:
        """Fail every call in progress, and every later one, with UNAVAILABLE naming ``reason``."""
        with self._lock:
            self._aborted = reason
            live = list(self._live)
        for connections in live:
            connections.abort(reason)

    def _track(self, connections: Connections) -> None:
        with self._lock:
            if self._aborted is not None:
                raise RegistryError(grpc.StatusCode.UNAVAILABLE, f"{connections.subject}: {self._aborted}")
            self._live.add(connections)

    def _untrack(self, connections: Connections) -> None:
        with self._lock:
            self._live.discard(connections)

    def resolve(self, ref: ImageReference, deadline: float) -> Image:
        """The manifest for this node's platform that ``ref`` names, and its layers."""
        with _Pull(self, ref, deadline) as pull:
            return pull.resolve()

    def fetch_blob(self, ref: ImageReference, blob: Blob, out: BinaryIO, deadline: float, max_bytes: int) -> None:
        """Stream ``blob`` of ``ref``'s repository into ``out``, verified against its size and digest.

        On failure ``out`` may hold part of the blob: the caller discards it.
        Errors writing to ``out`` propagate as they are (OSError).
        """
        if not DIGEST.fullmatch(blob.digest):
            raise RegistryError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{ref}: layer digest {blob.digest[:80]!r} is not a sha256 digest")
        if blob.size > max_bytes:
            raise RegistryError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{ref}: layer {blob.digest} is {blob.size} bytes, over the limit of {max_bytes}")
        with _Pull(self, ref, deadline) as pull:
            pull.fetch_blob(blob, out)
