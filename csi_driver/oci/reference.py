"""Image references built from a library volume's attributes.

A volume names its library with three attributes: the registry (a host, or a
host and a path such as ``gcr.io/datadoghq``), the package (``dd-lib-java-init``)
and the version (a tag, a ``sha256:`` digest, or ``tag@sha256:...``). The image
is ``<registry>/<package>`` at that version. The grammar is the OCI
distribution specification's; everything is checked here, before any of it
reaches a URL, and each refusal says what to change.

As with ``docker pull``, a registry attribute whose first part is no host name
(no dot, no port, not ``localhost``) is a Docker Hub namespace: ``datadog``
means ``docker.io/datadog``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
# The distribution registry's limit on a repository name, registry path included.
_MAX_NAME = 255


def _check_host(host: str) -> None:
    match = _HOST.fullmatch(host)
    if match is None:
        raise ValueError(
            f"registry host {host!r} is not a valid host name: write it as host or host:port, "
            "without a scheme (e.g. gcr.io, registry.example.com:5000)")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"registry host {host!r} has port {port}, outside 1-65535")


def _check_repository(repository: str, what: str) -> None:
    for component in repository.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise ValueError(
                f"{what} {repository!r} is not a valid repository path: each '/'-separated part must be "
                "lowercase letters and digits, separated by '.', '_', '__' or dashes (e.g. datadoghq/dd-lib-java-init)")
    if len(repository) > _MAX_NAME:
        raise ValueError(f"{what} {repository!r} is longer than {_MAX_NAME} characters")


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part.startswith("[") or part == "localhost"


def _split_registry(registry: str) -> tuple[str, str]:
    """``gcr.io/datadoghq`` -> (``gcr.io``, ``datadoghq``); ``datadog`` -> (``docker.io``, ``datadog``)."""
    if not registry:
        raise ValueError("the library registry is empty: set it to a registry such as gcr.io/datadoghq")
    if "://" in registry:
        raise ValueError(f"registry {registry!r} must not include a scheme: write e.g. gcr.io/datadoghq")
    first, _, path = registry.partition("/")
    if not _looks_like_host(first):
        return DOCKER_HUB, registry
    return first.lower(), path


def _split_version(version: str) -> tuple[str | None, str | None]:
    if not version:
        raise ValueError("the library version is empty: set a tag, a sha256:<digest> or tag@sha256:<digest>")
    tag, at, digest = version.partition("@")
    if not at and version.startswith("sha256:"):
        tag, digest = "", version
    if at and not tag:
        raise ValueError(f"version {version!r} has nothing before '@': write tag@sha256:<digest> or sha256:<digest>")
    return tag or None, digest or None


@dataclass(frozen=True)
class ImageReference:
    registry: str  # "host[:port]" as written, lowercase
    repository: str  # registry path + "/" + package, e.g. "datadoghq/dd-lib-java-init"
    tag: str | None
    digest: str | None  # "sha256:" + 64 lowercase hex

    def __post_init__(self) -> None:
        if self.registry != self.registry.lower():
            raise ValueError(f"registry host {self.registry!r} must be lowercase")
        _check_host(self.registry)
        _check_repository(self.repository, "image")
        if self.tag is None and self.digest is None:
            raise ValueError(f"image {self.registry}/{self.repository} needs a tag or a digest")
        if self.tag is not None and not _TAG.fullmatch(self.tag):
            raise ValueError(
                f"tag {self.tag!r} is not a valid tag: up to 128 letters, digits, '_', '.' and '-', "
                "not starting with '.' or '-'")
        if self.digest is not None and not _DIGEST.fullmatch(self.digest):
            raise ValueError(
                f"digest {self.digest!r} is not a valid digest: write sha256: followed by 64 lowercase hex digits")

    @classmethod
    def from_attributes(cls, registry: str, package: str, version: str) -> ImageReference:
        """The image ``<registry>/<package>`` at ``version``; ValueError says what to fix."""
        host, path = _split_registry(registry.strip())
        if path.endswith("/"):
            raise ValueError(f"registry {registry!r} ends with '/': write e.g. gcr.io/datadoghq")
        if path:
            _check_repository(path, "registry path")
        if not package:
            raise ValueError("the library package is empty: set it to a package such as dd-lib-java-init")
        _check_repository(package, "package")
        repository = f"{path}/{package}" if path else package
        if host == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"  # Docker Hub's official images
        tag, digest = _split_version(version.strip())
        return cls(registry=host, repository=repository, tag=tag, digest=digest)

    @property
    def manifest_reference(self) -> str:
        """What the registry is asked for: the digest when there is one (it wins over the tag)."""
        return self.digest or self.tag or ""

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text
