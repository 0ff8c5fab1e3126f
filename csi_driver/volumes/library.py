"""Single-step instrumentation: a library image's files, and the injector's preload file.

- ``DatadogLibrary``: one directory of an OCI image (``<registry>/<package>`` at a
  tag, a digest or ``tag@digest``), pulled into the on-node store and mounted
  read-only: ``datadog-init/package``, or ``opt/datadog-packages/datadog-apm-inject``
  for the injector's own package ``apm-inject``.
- ``DatadogInjectorPreload``: the file ``<storage>/ld.so.preload`` naming the
  injector's launcher, mounted read-only as a file.

Here a request's attributes become a ``VolumeSource``, from the configuration
alone; ``csi_driver.library`` pulls, stores and opens what it names. Both types
are served read-only only (a pod must not write into a library other pods share),
``nosuid`` and ``nodev``; not ``noexec``, since the files are code the pod loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from csi_driver.config import Config
from csi_driver.errors import RequestError, invalid, precondition
from csi_driver.mounts import Attr
from csi_driver.oci.reference import ImageReference
from csi_driver.volumes import Kind, VolumeSource

LIBRARY = "DatadogLibrary"
INJECTOR_PRELOAD = "DatadogInjectorPreload"
TYPES = (LIBRARY, INJECTOR_PRELOAD)
PACKAGE_KEY = "dd.csi.datadog.com/library.package"
REGISTRY_KEY = "dd.csi.datadog.com/library.registry"
VERSION_KEY = "dd.csi.datadog.com/library.version"
INJECTOR_PACKAGE = "apm-inject"
# What each image holds for the pod, relative to the image's root.
LIBRARY_CONTENT = "datadog-init/package"
INJECTOR_CONTENT = "opt/datadog-packages/datadog-apm-inject"
STORE_DIR = "store"
PRELOAD_FILE = "ld.so.preload"
PRELOAD_CONTENT = b"/opt/datadog-packages/datadog-apm-inject/stable/inject/launcher.preload.so\n"
MOUNT_ATTRS = Attr.RDONLY | Attr.NOSUID | Attr.NODEV
_ATTRIBUTES = (
    (PACKAGE_KEY, "the library's image name, e.g. dd-lib-java-init"),
    (REGISTRY_KEY, "the registry and path it is pulled from, e.g. gcr.io/datadoghq"),
    (VERSION_KEY, "a tag, a sha256: digest, or tag@sha256:digest"),
)


@dataclass(frozen=True)
class LibraryImage:
    reference: ImageReference
    package: str  # as the pod wrote it: the metrics ``library`` label once it is stored
    registry: str  # as the pod wrote it, normalised: what the allow list is compared with
    content: str  # the directory of the image that is mounted


def is_library_family(source: VolumeSource) -> bool:
    return source.type in TYPES


def content_dir(package: str) -> str:
    return INJECTOR_CONTENT if package == INJECTOR_PACKAGE else LIBRARY_CONTENT


def store_path(config: Config) -> str:
    return os.path.join(config.storage_path, STORE_DIR)


def preload_path(config: Config) -> str:
    return os.path.join(config.storage_path, PRELOAD_FILE)


def normalise_registry(registry: str) -> str:
    return registry.strip().rstrip("/").lower()


def allow_list_entry(registry: str, allow_list: tuple[str, ...]) -> str | None:
    """The allow-list entry that admits ``registry`` (itself, or a host or path
    above it), or None."""
    for entry in allow_list:
        allowed = normalise_registry(entry)
        if registry == allowed or registry.startswith(allowed + "/"):
            return entry
    return None


def resolve(context: Mapping[str, str], config: Config) -> VolumeSource | None:
    volume_type = context.get("type")
    if volume_type not in TYPES:
        return None
    if not config.apm_enabled:
        raise precondition(
            f"volume type {volume_type} (single-step instrumentation) is disabled on this node: "
            "the driver runs with --apm-enabled=false (Helm value apm.enabled)")
    if volume_type == INJECTOR_PRELOAD:
        return VolumeSource(INJECTOR_PRELOAD, preload_path(config), Kind.FILE, attrs=MOUNT_ATTRS,
                            requires_readonly=True)
    return VolumeSource(LIBRARY, store_path(config), Kind.DIRECTORY, attrs=MOUNT_ATTRS,
                        requires_readonly=True, image=_image(context, config))


def _image(context: Mapping[str, str], config: Config) -> LibraryImage:
    values = []
    for key, meaning in _ATTRIBUTES:
        value = context.get(key, "").strip()
        if not value:
            raise invalid(f"volume type {LIBRARY} needs the volume attribute {key} ({meaning})")
        values.append(value)
    package, registry, version = values
    try:
        reference = ImageReference.from_attributes(registry, package, version)
    except ValueError as err:
        raise invalid(f"{LIBRARY} volume attributes do not name a valid image: {err}") from None
    written = normalise_registry(registry)
    if config.registry_allow_list and allow_list_entry(written, config.registry_allow_list) is None:
        raise RequestError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"registry {written[:128]!r} is not in this node's registry allow list "
            f"({', '.join(config.registry_allow_list)}); use one of those registries or add it "
            "to --registry-allow-list (Helm value global.apmRegistryAllowList)")
    return LibraryImage(reference, package, written, content_dir(package))
