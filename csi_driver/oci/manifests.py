"""Image manifests and indexes, OCI and Docker, and picking this node's platform.

Only what a pull needs is read: an index's entries (digest, size, platform),
an image manifest's layers (digest, size, media type). Every field used is
type-checked, since a registry's JSON is input like any other.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import dataclass
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# Sent on every manifest request: a registry answers a tag with the first of
# these it holds, and without the index types some answer 404 for multi-platform tags.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
# The distribution registry refuses to store manifests larger than this.
MAX_MANIFEST_BYTES = 4 << 20
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")

# Python's names for this machine's architecture -> OCI's (os, architecture, variant).
_MACHINES = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


def host_platform() -> tuple[str, str]:
    """This node's (os, architecture) in OCI's terms, e.g. ("linux", "amd64")."""
    machine = platform.machine().lower()
    os_name = "linux" if sys.platform.startswith("linux") else sys.platform
    return os_name, _MACHINES.get(machine, (machine, ""))[0]


def host_variant() -> str:
    return _MACHINES.get(platform.machine().lower(), ("", ""))[1]


class ManifestInvalid(ValueError):
    """The document is not a manifest or index this client can use; the message says why."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    os: str = ""
    architecture: str = ""
    variant: str = ""

    @property
    def platform(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Manifest:
    media_type: str
    layers: tuple[Descriptor, ...]


def _descriptor(entry: Any, where: str) -> Descriptor:
    if not isinstance(entry, dict):
        raise ManifestInvalid(f"{where} is not an object")
    digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType", "")
    if not isinstance(digest, str) or not digest:
        raise ManifestInvalid(f"{where} has no digest")
    if not DIGEST.fullmatch(digest):
        raise ManifestInvalid(f"{where} has digest {digest[:80]!r}: only sha256 digests are supported")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where} has no valid size")
    if not isinstance(media_type, str):
        raise ManifestInvalid(f"{where} has a mediaType that is not a string")
    platform_field = entry.get("platform") or {}
    if not isinstance(platform_field, dict):
        raise ManifestInvalid(f"{where} has a platform that is not an object")
    fields = [platform_field.get(key, "") for key in ("os", "architecture", "variant")]
    if not all(isinstance(value, str) for value in fields):
        raise ManifestInvalid(f"{where} has a platform whose fields are not strings")
    return Descriptor(media_type, digest, size, *fields)


def _kind(document: dict[str, Any], content_type: str) -> str:
    """The document's media type: its own mediaType field, else the response's Content-Type."""
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("its mediaType is not a string")
    media_type = declared or content_type.split(";")[0].strip().lower()
    if media_type in INDEX_TYPES or media_type in MANIFEST_TYPES:
        return media_type
    if document.get("schemaVersion") == 1:
        raise ManifestInvalid("it is a Docker schema 1 manifest, which is not supported: push the image again "
                              "with a current client")
    # OCI makes mediaType optional: the fields tell an index from a manifest.
    if "manifests" in document:
        return OCI_INDEX
    if "layers" in document:
        return OCI_MANIFEST
    raise ManifestInvalid(f"its media type {media_type or '(none)'!r} is neither an image manifest nor an index")


def parse(body: bytes, content_type: str) -> Index | Manifest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestInvalid(f"it is not JSON ({err})") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("it is not a JSON object")
    media_type = _kind(document, content_type)
    if media_type in INDEX_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise ManifestInvalid("the index has no manifests list")
        return Index(media_type, tuple(_descriptor(e, f"index entry {i}") for i, e in enumerate(entries)))
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise ManifestInvalid("the manifest has no layers list")
    return Manifest(media_type, tuple(_descriptor(e, f"layer {i}") for i, e in enumerate(layers)))


def select(index: Index, os_name: str, architecture: str, variant: str = "") -> Descriptor | None:
    """The entry for this platform: the first whose os and architecture match, one
    with the wanted variant (or none, for arm64's implicit v8) preferred."""
    candidates = [d for d in index.manifests
                  if d.os == os_name and d.architecture == architecture
                  and (d.media_type in INDEX_TYPES or d.media_type in MANIFEST_TYPES or not d.media_type)]
    if variant:
        for descriptor in candidates:
            if descriptor.variant == variant or (not descriptor.variant and variant == "v8"):
                return descriptor
    return candidates[0] if candidates else None
