"""Manifest and index parsing, and choosing this node's entry of an index."""

from __future__ import annotations

import json

import pytest

from csi_driver.oci.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Index,
    Manifest,
    ManifestInvalid,
    parse,
    select,
)
from csi_driver.oci.transport import Url, is_loopback


def _digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def _entry(n: int, os_name: str, arch: str, variant: str = "", media_type: str = OCI_MANIFEST) -> dict[str, object]:
    platform = {"os": os_name, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"mediaType": media_type, "digest": _digest(n), "size": 100 + n, "platform": platform}


def _index(*entries: dict[str, object]) -> Index:
    parsed = parse(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}).encode(), "")
    assert isinstance(parsed, Index)
    return parsed


def test_an_index_entry_is_chosen_by_os_and_architecture() -> None:
    index = _index(_entry(1, "linux", "arm64"), _entry(2, "linux", "amd64"), _entry(3, "windows", "amd64"))
    assert select(index, "linux", "amd64") == index.manifests[1]
    assert select(index, "windows", "amd64") == index.manifests[2]
    assert select(index, "linux", "s390x") is None


def test_the_variant_decides_between_entries_of_one_architecture() -> None:
    index = _index(_entry(1, "linux", "arm", "v6"), _entry(2, "linux", "arm", "v7"))
    assert select(index, "linux", "arm", "v7") == index.manifests[1]
    arm64 = _index(_entry(1, "linux", "arm64", "v9"), _entry(2, "linux", "arm64"))
    assert select(arm64, "linux", "arm64", "v8") == arm64.manifests[1]  # no variant means v8 on arm64


def test_attestations_and_other_artifacts_in_an_index_are_never_chosen() -> None:
    index = _index(_entry(1, "linux", "amd64", media_type="application/vnd.in-toto+json"),
                   _entry(2, "linux", "amd64"))
    assert select(index, "linux", "amd64") == index.manifests[1]


@pytest.mark.parametrize(("document", "content_type", "kind"), [
    ({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}, "", OCI_MANIFEST),
    ({"schemaVersion": 2, "layers": []}, DOCKER_MANIFEST, DOCKER_MANIFEST),
    ({"schemaVersion": 2, "layers": []}, "", OCI_MANIFEST),
    ({"schemaVersion": 2, "manifests": []}, "", OCI_INDEX),
    ({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []}, "application/json", DOCKER_LIST),
])
def test_media_type_from_the_document_then_the_response_then_its_fields(document: dict[str, object],
                                                                       content_type: str, kind: str) -> None:
    assert parse(json.dumps(document).encode(), content_type).media_type == kind


def test_layers_keep_their_order_digest_size_and_media_type() -> None:
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(i), "size": i}
              for i in (3, 1, 2)]
    parsed = parse(json.dumps({"mediaType": OCI_MANIFEST, "layers": layers}).encode(), "")
    assert isinstance(parsed, Manifest)
    assert [(layer.digest, layer.size) for layer in parsed.layers] == [(_digest(3), 3), (_digest(1), 1),
                                                                       (_digest(2), 2)]


@pytest.mark.parametrize(("body", "complaint"), [
    (b"\xff", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 1, "fsLayers": []}', "schema 1"),
    (b'{"mediaType": "text/plain"}', "neither an image manifest nor an index"),
    (b'{"mediaType": 7}', "mediaType is not a string"),
    (json.dumps({"mediaType": OCI_MANIFEST}).encode(), "no layers list"),
    (json.dumps({"mediaType": OCI_INDEX, "manifests": {}}).encode(), "no manifests list"),
    (json.dumps({"mediaType": OCI_MANIFEST, "layers": [{"digest": "sha512:" + "a" * 128, "size": 1}]}).encode(),
     "only sha256"),
    (json.dumps({"mediaType": OCI_MANIFEST, "layers": [{"digest": _digest(1), "size": -1}]}).encode(),
     "no valid size"),
    (json.dumps({"mediaType": OCI_MANIFEST, "layers": [{"digest": _digest(1), "size": True}]}).encode(),
     "no valid size"),
    (json.dumps({"mediaType": OCI_MANIFEST, "layers": [{"size": 1}]}).encode(), "no digest"),
    (json.dumps({"mediaType": OCI_INDEX,
                 "manifests": [{"digest": _digest(1), "size": 1, "platform": "linux"}]}).encode(),
     "platform that is not an object"),
])
def test_unusable_documents_are_refused_with_the_reason(body: bytes, complaint: str) -> None:
    with pytest.raises(ManifestInvalid, match=complaint):
        parse(body, "")


def test_plain_http_only_to_loopback() -> None:
    assert all(is_loopback(host) for host in ("localhost", "127.0.0.1", "127.1.2.3", "[::1]", "::1"))
    assert not any(is_loopback(host) for host in ("10.0.0.1", "gcr.io", "localhost.example.com", "[::2]"))
    assert Url.parse("http://127.0.0.1:5000/token?x=1").target == "/token?x=1"
    assert Url.parse("https://gcr.io/v2/").port == 443
    with pytest.raises(ValueError, match="plain HTTP"):
        Url.parse("http://auth.example.com/token")
    with pytest.raises(ValueError, match="not an http"):
        Url.parse("file:///etc/passwd")
    assert Url.parse("https://gcr.io/v2/x").join("/storage/blob?sig=1") == Url("https", "gcr.io", 443,
                                                                               "/storage/blob?sig=1")
    assert Url.parse("https://gcr.io/v2/x").join("https://storage.example.com/b").host == "storage.example.com"
