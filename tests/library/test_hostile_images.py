"""Hostile library images: each refused with its status, nothing stored, nothing written outside.

A registry serves whatever was pushed to it, so an image is untrusted input:
entries that climb out of the image (``..``, absolute names, symlinks and hard
links pointing out, writes through a symlink), device nodes, more bytes than
``--library-max-size``, and blobs that arrive cut short or altered on the way.
"""

from __future__ import annotations

import os
import tarfile
import uuid

import pytest

from support.library_driver import LibraryNode, library_attributes, publish_error
from support.oci_registry import Fault, files_layer, tar_layer
from support.snapshot import mounts_under

RESOLUTIONS = "datadog_csi_driver_library_resolutions_total"
PACKAGE_DIR = "datadog-init/package"
# What the storage directory may hold besides the store's entries.
STORAGE_FILES = {"ld.so.preload", "libraries.db", "libraries.db-wal", "libraries.db-shm", "store", "tmp"}


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, *, linkname: str = "",
           mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, linkname, 0
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info, data if kind == tarfile.REGTYPE else None


def package_dirs() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [member("datadog-init", tarfile.DIRTYPE, mode=0o755),
            member(PACKAGE_DIR, tarfile.DIRTYPE, mode=0o755),
            member(f"{PACKAGE_DIR}/version", data=b"1\n")]


def hostile_members(marker: str) -> dict[str, list[tuple[tarfile.TarInfo, bytes | None]]]:
    escape = f"escape-{marker}"
    return {
        "path traversal": [member(f"{PACKAGE_DIR}/../../../../{escape}", data=b"x")],
        "absolute path": [member(f"/tmp/{escape}", data=b"x")],
        "symlink escape": [member(f"{PACKAGE_DIR}/out", tarfile.SYMTYPE, linkname="../../../../.."),
                           member(f"{PACKAGE_DIR}/out/tmp/{escape}", data=b"x")],
        "write through a symlink": [member(f"{PACKAGE_DIR}/tmp", tarfile.SYMTYPE, linkname="/tmp"),
                                    member(f"{PACKAGE_DIR}/tmp/{escape}", data=b"x")],
        "hard-link escape": [member(f"{PACKAGE_DIR}/passwd", tarfile.LNKTYPE, linkname="/etc/passwd")],
        "hard link out by ..": [member(f"{PACKAGE_DIR}/hosts", tarfile.LNKTYPE,
                                       linkname="../../../../etc/hosts")],
        "device node": [member(f"{PACKAGE_DIR}/null", tarfile.CHRTYPE)],
    }


@pytest.fixture
def node(tmp_path, kubelet_root, agent):
    node = LibraryNode(str(tmp_path / "node"), kubelet_root, agent.dsd_path, agent.apm_path,
                       extra_args=["--library-max-size=256Ki"]).start()
    yield node
    node.stop()


def assert_left_nothing(node: LibraryNode, marker: str, tmp_path) -> None:
    assert node.stored() == []
    assert os.listdir(os.path.join(node.storage, "tmp")) == []
    assert set(os.listdir(node.storage)) <= STORAGE_FILES
    for directory, dirs, files in os.walk(tmp_path):
        assert not [name for name in dirs + files if marker in name], directory
    for where in ("/tmp", "/", "/etc"):
        assert not [name for name in os.listdir(where) if marker in name], where


def publish_refused(node: LibraryNode, attributes: dict[str, str]) -> tuple[str, str]:
    uid = str(uuid.uuid4())
    code, message = publish_error(lambda: node.publish(attributes, pod_uid=uid))
    target = os.path.join(node.kubelet_root, "pods", uid, "volumes", "kubernetes.io~csi", "lib", "mount")
    assert not os.path.lexists(target) and mounts_under(target) == []
    return code, message


@pytest.mark.parametrize("case", list(hostile_members("x")))
def test_escaping_entries_and_device_nodes_are_refused(node, oci_registry, tmp_path, case):
    marker = uuid.uuid4().hex
    layer = tar_layer(package_dirs() + hostile_members(marker)[case])
    image = oci_registry.push_image(f"datadoghq/dd-lib-{marker[:8]}", [layer], tag="v1")
    code, message = publish_refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "FAILED_PRECONDITION", message
    assert image.repository in message and layer.digest in message
    assert_left_nothing(node, marker, tmp_path)
    assert node.metric(RESOLUTIONS, library="other", result="failed") == 1


def test_a_layer_over_the_size_limit_is_refused(node, oci_registry, tmp_path):
    marker = uuid.uuid4().hex
    # A few KB compressed, 1 MiB unpacked: the limit holds for what is written.
    layer = files_layer({f"{PACKAGE_DIR}/big-{marker}": bytes(1 << 20)})
    assert layer.size < 256 * 1024
    image = oci_registry.push_image(f"datadoghq/dd-lib-{marker[:8]}", [layer], tag="v1")
    code, message = publish_refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "RESOURCE_EXHAUSTED", message
    assert_left_nothing(node, marker, tmp_path)


def test_layers_larger_than_the_limit_are_not_even_downloaded(node, oci_registry, tmp_path):
    marker = uuid.uuid4().hex
    layer = files_layer({f"{PACKAGE_DIR}/noise-{marker}": os.urandom(300 * 1024)})
    image = oci_registry.push_image(f"datadoghq/dd-lib-{marker[:8]}", [layer], tag="v1")
    code, message = publish_refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "RESOURCE_EXHAUSTED" and "--library-max-size" in message
    assert oci_registry.count(image.repository, "blobs") == 0
    assert_left_nothing(node, marker, tmp_path)


@pytest.mark.parametrize("fault", [Fault.TRUNCATE, Fault.CORRUPT])
def test_a_blob_cut_short_or_altered_is_refused(node, oci_registry, tmp_path, fault):
    marker = uuid.uuid4().hex
    layer = files_layer({f"{PACKAGE_DIR}/file-{marker}": os.urandom(64 * 1024)})
    image = oci_registry.push_image(f"datadoghq/dd-lib-{marker[:8]}", [layer], tag="v1")
    oci_registry.inject(layer.digest, fault)
    code, message = publish_refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "DATA_LOSS", message
    assert layer.digest in message
    assert_left_nothing(node, marker, tmp_path)
    # Served right again: the next try stores it.
    oci_registry.reset()
    target = node.publish(library_attributes(oci_registry.host, image.repository, "v1"))
    assert node.stored() == [image.digest]
    node.unpublish(target)


def test_whiteouts_of_later_layers_are_honoured(node, oci_registry):
    first = files_layer({f"{PACKAGE_DIR}/old.so": "old", f"{PACKAGE_DIR}/keep.so": "keep"})
    second = tar_layer([member("datadog-init", tarfile.DIRTYPE, mode=0o755),
                        member(PACKAGE_DIR, tarfile.DIRTYPE, mode=0o755),
                        member(f"{PACKAGE_DIR}/.wh.old.so", data=b""),
                        member(f"{PACKAGE_DIR}/new.so", data=b"new")])
    image = oci_registry.push_image(f"datadoghq/dd-lib-{uuid.uuid4().hex[:8]}", [first, second], tag="v1")
    target = node.publish(library_attributes(oci_registry.host, image.repository, "v1"))
    assert sorted(os.listdir(target)) == ["keep.so", "new.so"]
    node.unpublish(target)


def test_setuid_bits_are_stripped(node, oci_registry):
    layer = tar_layer(package_dirs() + [member(f"{PACKAGE_DIR}/tool", data=b"#!/bin/sh\n", mode=0o6755)])
    image = oci_registry.push_image(f"datadoghq/dd-lib-{uuid.uuid4().hex[:8]}", [layer], tag="v1")
    target = node.publish(library_attributes(oci_registry.host, image.repository, "v1"))
    assert os.stat(os.path.join(target, "tool")).st_mode & 0o7000 == 0
    node.unpublish(target)
