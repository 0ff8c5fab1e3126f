"""The registry client against a real distribution registry on loopback.

Each test pushes its own images (unique repository names) to a registry that
serves the whole session; faults (a registry answering 503, stalling, cutting a
body short, serving a changed byte) come from the counting proxy in front of it.
"""

from __future__ import annotations

import io
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from csi_driver.oci.reference import ImageReference
from csi_driver.oci.registry import Blob, Credentials, Image, RegistryClient, RegistryError
from support.oci_registry import (
    DOCKER_MANIFEST,
    HOST_PLATFORM,
    OTHER_PLATFORM,
    PRIVATE_PREFIX,
    USERNAME,
    Fault,
    OciRegistry,
    PushedImage,
    dockerconfigjson,
    files_layer,
    raw_layer,
    unique_repository,
)

MIB = 1 << 20
ANONYMOUS = Credentials.from_environ({})


def _soon(seconds: float = 20.0) -> float:
    return time.monotonic() + seconds


def _ref(registry: OciRegistry, repository: str, tag: str | None = "v1", digest: str | None = None) -> ImageReference:
    return ImageReference(registry.host, repository, tag, digest)


def _client(registry: OciRegistry | None = None, password: str | None = None, **kwargs: Any) -> RegistryClient:
    if registry is None:
        return RegistryClient(ANONYMOUS, **kwargs)
    config = dockerconfigjson(registry.host, password=password) if password else dockerconfigjson(registry.host)
    return RegistryClient(Credentials.from_environ({"DD_APM_REGISTRY_AUTH_0": config}), **kwargs)


def _library(name: str = "lib.so", content: bytes = b"library code") -> list:
    return [files_layer({"datadog-init/package/" + name: content}), files_layer({"datadog-init/package/VERSION": "1"})]


def _expected(image: PushedImage) -> Image:
    docker = image.media_type == DOCKER_MANIFEST
    descriptors = [layer.descriptor(docker) for layer in image.layers]
    return Image(image.digest, tuple(Blob(str(d["digest"]), int(str(d["size"])), str(d["mediaType"]))
                                     for d in descriptors))


def _fetch(client: RegistryClient, ref: ImageReference, blob: Blob, max_bytes: int = 64 * MIB,
           deadline: float | None = None) -> bytes:
    out = io.BytesIO()
    client.fetch_blob(ref, blob, out, deadline or _soon(), max_bytes)
    return out.getvalue()


def _failure(call: object, *args: object) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


# --- resolving ---------------------------------------------------------------------------------------


def test_a_tag_resolves_to_its_manifest_and_layers(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(), tag="v1")
    assert _client().resolve(_ref(oci_registry, repository), _soon()) == _expected(image)


def test_a_digest_resolves_without_any_tag(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library())
    resolved = _client().resolve(_ref(oci_registry, repository, None, image.digest), _soon())
    assert resolved == _expected(image)
    asked = [(r.reference, r.status) for r in oci_registry.requests(repository, "manifests")]
    assert asked == [(image.digest, 401), (image.digest, 200)]  # then again with a token


def test_tag_at_digest_follows_the_digest(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    oci_registry.push_image(repository, _library(content=b"one"), tag="v1")
    second = oci_registry.push_image(repository, _library(content=b"two"), tag="v2")
    resolved = _client().resolve(_ref(oci_registry, repository, "v1", second.digest), _soon())
    assert resolved == _expected(second)


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-manifest-list"])
def test_an_index_leads_to_this_nodes_platform(oci_registry: OciRegistry, docker: bool) -> None:
    repository = unique_repository()
    index = oci_registry.push_index(repository, {OTHER_PLATFORM: _library(content=b"other"),
                                                 HOST_PLATFORM: _library(content=b"ours")}, tag="v1", docker=docker)
    ours = index.manifests[HOST_PLATFORM]
    resolved = _client().resolve(_ref(oci_registry, repository), _soon())
    assert resolved == Image(ours.digest, _expected(ours).layers, index.digest)
    other = index.manifests[OTHER_PLATFORM]
    for_other = _client(platform=OTHER_PLATFORM).resolve(_ref(oci_registry, repository), _soon())
    assert for_other == Image(other.digest, _expected(other).layers, index.digest)


def test_an_index_without_this_platform_is_refused_naming_what_it_has(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    oci_registry.push_index(repository, {HOST_PLATFORM: _library(), OTHER_PLATFORM: _library()}, tag="v1")
    error = _failure(_client(platform=("linux", "s390x")).resolve, _ref(oci_registry, repository), _soon())
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "linux/s390x" in error.message and "/".join(HOST_PLATFORM) in error.message
    assert "/".join(OTHER_PLATFORM) in error.message and repository in error.message


def test_tag_requests_accept_oci_and_docker_indexes_and_manifests(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    oci_registry.push_image(repository, _library(), tag="v1", docker=True)
    _client().resolve(_ref(oci_registry, repository), _soon())
    accepted = {part.strip() for part in oci_registry.requests(repository, "manifests")[-1].accept.split(",")}
    assert accepted >= {"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.docker.distribution.manifest.v2+json"}


@pytest.mark.parametrize(("tag", "digest", "what"), [
    ("no-such-tag", None, "tag 'no-such-tag' not found"),
    (None, "sha256:" + "0" * 64, "not found"),
])
def test_unknown_tags_and_digests_are_not_found(oci_registry: OciRegistry, tag: str | None, digest: str | None,
                                                what: str) -> None:
    repository = unique_repository()
    oci_registry.push_image(repository, _library(), tag="v1")
    error = _failure(_client().resolve, _ref(oci_registry, repository, tag, digest), _soon())
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert what in error.message and str(_ref(oci_registry, repository, tag, digest)) in error.message


def test_an_unknown_repository_is_not_found(oci_registry: OciRegistry) -> None:
    error = _failure(_client().resolve, _ref(oci_registry, unique_repository("never-pushed")), _soon())
    assert error.code == grpc.StatusCode.NOT_FOUND


# --- authentication ----------------------------------------------------------------------------------


def test_no_authentication_at_all(open_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = open_registry.push_image(repository, _library(), tag="v1")
    client = _client()
    resolved = client.resolve(_ref(open_registry, repository), _soon())
    assert _fetch(client, _ref(open_registry, repository), resolved.layers[0]) == image.layers[0].data
    assert {r.authorization for r in open_registry.requests(repository)} == {""}


def test_anonymous_bearer_token_for_a_public_repository(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(), tag="v1")
    assert _client().resolve(_ref(oci_registry, repository), _soon()) == _expected(image)
    assert oci_registry.tokens is not None
    assert (None, f"repository:{repository}:pull") in oci_registry.tokens.issued
    assert oci_registry.requests(repository)[-1].authorization == "Bearer"


@pytest.mark.parametrize("split_fields", [False, True], ids=["auth-field", "username-password"])
def test_bearer_token_with_credentials_for_a_private_repository(oci_registry: OciRegistry, split_fields: bool) -> None:
    repository = unique_repository(PRIVATE_PREFIX + "lib")
    image = oci_registry.push_image(repository, _library(), tag="v1")
    credentials = Credentials.from_environ(
        {"DD_APM_REGISTRY_AUTH_3": dockerconfigjson(oci_registry.host, split_fields=split_fields)})
    client = RegistryClient(credentials)
    ref = _ref(oci_registry, repository)
    assert client.resolve(ref, _soon()) == _expected(image)
    assert _fetch(client, ref, _expected(image).layers[1]) == image.layers[1].data
    assert oci_registry.tokens is not None
    assert oci_registry.tokens.issued.count((USERNAME, f"repository:{repository}:pull")) == 1  # reused after


def test_a_private_repository_refuses_anonymous_pulls(oci_registry: OciRegistry) -> None:
    repository = unique_repository(PRIVATE_PREFIX + "lib")
    oci_registry.push_image(repository, _library(), tag="v1")
    error = _failure(_client().resolve, _ref(oci_registry, repository), _soon())
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert "anonymous" in error.message and "DD_APM_REGISTRY_AUTH_" in error.message and repository in error.message


def test_wrong_credentials_are_refused_by_the_token_service(oci_registry: OciRegistry) -> None:
    repository = unique_repository(PRIVATE_PREFIX + "lib")
    oci_registry.push_image(repository, _library(), tag="v1")
    error = _failure(_client(oci_registry, password="wrong").resolve, _ref(oci_registry, repository), _soon())
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert USERNAME in error.message and "DD_APM_REGISTRY_AUTH_0" in error.message
    assert "wrong" not in error.message


def test_a_refused_cached_token_is_replaced(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(), tag="v1")
    client = _client()
    client.tokens.put((oci_registry.host, repository), "Bearer revoked", 300)
    assert client.resolve(_ref(oci_registry, repository), _soon()) == _expected(image)


def test_basic_authentication(basic_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = basic_registry.push_image(repository, _library(), tag="v1")
    client = _client(basic_registry)
    ref = _ref(basic_registry, repository)
    assert client.resolve(ref, _soon()) == _expected(image)
    assert _fetch(client, ref, _expected(image).layers[0]) == image.layers[0].data
    # After the first challenge the login goes with every request.
    assert [r.authorization for r in basic_registry.requests(repository)] == ["", "Basic", "Basic"]


@pytest.mark.parametrize("password", [None, "wrong"], ids=["no-credentials", "wrong-password"])
def test_basic_authentication_refused(basic_registry: OciRegistry, password: str | None) -> None:
    repository = unique_repository()
    basic_registry.push_image(repository, _library(), tag="v1")
    client = _client(basic_registry, password=password) if password else _client()
    error = _failure(client.resolve, _ref(basic_registry, repository), _soon())
    assert error.code == grpc.StatusCode.PERMISSION_DENIED and basic_registry.host in error.message


# --- unavailable registries and time limits ------------------------------------------------------------


def test_a_registry_that_is_down_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: connections are refused
        error = _failure(_client().resolve, ImageReference(host, "datadoghq/lib", "v1", None), _soon())
    assert error.code == grpc.StatusCode.UNAVAILABLE and host in error.message


def test_a_failing_registry_is_unavailable(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    oci_registry.push_image(repository, _library(), tag="v1")
    oci_registry.inject(repository, Fault.UNAVAILABLE)
    error = _failure(_client().resolve, _ref(oci_registry, repository), _soon())
    assert error.code == grpc.StatusCode.UNAVAILABLE and "HTTP 503" in error.message


def test_a_stalled_registry_is_given_up_at_the_deadline(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    oci_registry.push_image(repository, _library(), tag="v1")
    oci_registry.inject(repository, Fault.STALL)  # answers after FAULT_SECONDS, long after the deadline
    error = _failure(_client().resolve, _ref(oci_registry, repository), _soon(1.0))
    assert error.code == grpc.StatusCode.UNAVAILABLE and "timed out" in error.message


def test_a_trickling_download_is_given_up_at_the_deadline(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(content=os.urandom(4096)), tag="v1")
    ref = _ref(oci_registry, repository)
    client = _client()
    blob = client.resolve(ref, _soon()).layers[0]
    oci_registry.inject(blob.digest, Fault.TRICKLE)  # every byte arrives well within the inactivity timeout
    error = _failure(_fetch, client, ref, blob, 64 * MIB, _soon(1.5))
    assert error.code == grpc.StatusCode.UNAVAILABLE and "timed out" in error.message
    assert image.layers[0].digest == blob.digest


def test_a_deadline_already_past_makes_no_request(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    oci_registry.push_image(repository, _library(), tag="v1")
    error = _failure(_client().resolve, _ref(oci_registry, repository), time.monotonic() - 1)
    assert error.code == grpc.StatusCode.UNAVAILABLE and oci_registry.requests(repository) == []


# --- downloading ---------------------------------------------------------------------------------------


def test_a_large_blob_streams_verified_into_the_file(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    big = raw_layer(os.urandom(6 * MIB + 123))
    image = oci_registry.push_image(repository, [big], tag="v1")
    client = _client()
    ref = _ref(oci_registry, repository)
    [blob] = client.resolve(ref, _soon()).layers
    assert blob == Blob(big.digest, big.size, big.media_type)
    assert _fetch(client, ref, blob, max_bytes=big.size) == big.data
    assert image.layers == (big,)


def test_blobs_follow_redirects(open_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = open_registry.push_image(repository, _library(), tag="v1")
    blob = _expected(image).layers[0]
    open_registry.inject(blob.digest, Fault.REDIRECT)
    assert _fetch(_client(), _ref(open_registry, repository), blob) == image.layers[0].data


def test_a_blob_over_the_limit_is_refused_before_any_request(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(), tag="v1")
    blob = _expected(image).layers[0]
    error = _failure(_fetch, _client(), _ref(oci_registry, repository), blob, blob.size - 1)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(blob.size) in error.message and str(blob.size - 1) in error.message
    assert oci_registry.count(repository, "blobs") == 0


@pytest.mark.parametrize(("fault", "complaint"), [
    (Fault.CORRUPT, "corrupted or tampered"),
    (Fault.TRUNCATE, "stopped after"),
])
def test_a_blob_that_does_not_match_its_digest_is_data_loss(oci_registry: OciRegistry, fault: Fault,
                                                            complaint: str) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(content=os.urandom(1000)), tag="v1")
    blob = _expected(image).layers[0]
    oci_registry.inject(blob.digest, fault)
    error = _failure(_fetch, _client(), _ref(oci_registry, repository), blob)
    assert error.code == grpc.StatusCode.DATA_LOSS
    assert complaint in error.message and blob.digest in error.message


def test_a_blob_whose_size_differs_from_the_manifest_is_data_loss(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(), tag="v1")
    actual = _expected(image).layers[0]
    claimed = Blob(actual.digest, actual.size + 1, actual.media_type)
    error = _failure(_fetch, _client(), _ref(oci_registry, repository), claimed)
    assert error.code == grpc.StatusCode.DATA_LOSS and str(actual.size + 1) in error.message


def test_an_unknown_blob_is_not_found(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    oci_registry.push_image(repository, _library(), tag="v1")
    missing = Blob("sha256:" + "1" * 64, 10, "application/vnd.oci.image.layer.v1.tar+gzip")
    error = _failure(_fetch, _client(), _ref(oci_registry, repository), missing)
    assert error.code == grpc.StatusCode.NOT_FOUND and missing.digest in error.message


def test_a_manifest_that_does_not_match_its_digest_is_data_loss(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    image = oci_registry.push_image(repository, _library(), tag="v1")
    oci_registry.inject(image.digest, Fault.CORRUPT)
    error = _failure(_client().resolve, _ref(oci_registry, repository, None, image.digest), _soon())
    assert error.code == grpc.StatusCode.DATA_LOSS and image.digest in error.message


def test_an_index_entry_that_does_not_match_its_digest_is_data_loss(oci_registry: OciRegistry) -> None:
    repository = unique_repository()
    index = oci_registry.push_index(repository, {HOST_PLATFORM: _library(), OTHER_PLATFORM: _library()}, tag="v1")
    oci_registry.inject(index.manifests[HOST_PLATFORM].digest, Fault.TRUNCATE)
    error = _failure(_client().resolve, _ref(oci_registry, repository), _soon())
    assert error.code == grpc.StatusCode.DATA_LOSS


# --- one client, many threads ---------------------------------------------------------------------------


def test_one_client_serves_concurrent_pulls_of_different_images(oci_registry: OciRegistry) -> None:
    images = {}
    for n in range(6):
        repository = unique_repository(PRIVATE_PREFIX + "lib" if n % 2 else "lib")
        images[repository] = oci_registry.push_index(
            repository, {HOST_PLATFORM: _library(content=os.urandom(64 << 10)), OTHER_PLATFORM: _library()}, tag="v1")
    client = _client(oci_registry)

    def pull(repository: str) -> list[bytes]:
        ref = _ref(oci_registry, repository)
        return [_fetch(client, ref, blob) for blob in client.resolve(ref, _soon(60)).layers]

    with ThreadPoolExecutor(max_workers=6) as pool:
        pulled = dict(zip(images, pool.map(pull, images), strict=True))
    for repository, index in images.items():
        assert pulled[repository] == [layer.data for layer in index.manifests[HOST_PLATFORM].layers]
