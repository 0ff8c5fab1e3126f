"""csi_driver.mounts against the real kernel."""

from __future__ import annotations

import os

import pytest

from csi_driver import mounts
from csi_driver.mounts import Attr

LOCKED = Attr.RDONLY | Attr.NOSUID | Attr.NODEV | Attr.NOEXEC


def _open_path(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)


@pytest.fixture(params=["new-api", "classic"])
def mount_api(request, monkeypatch):
    """Both ways of mounting: the mount API, and mount(2) as on kernels before 5.12."""
    monkeypatch.setattr(mounts, "_new_api_usable", request.param == "new-api")
    return request.param


@pytest.mark.parametrize("attrs", [mounts.NONE, Attr.RDONLY, LOCKED], ids=["rw", "ro", "locked"])
def test_bind_detect_unmount(tmp_path, mount_api, attrs):
    source = tmp_path / "source dir"  # a space: mountinfo escapes it
    source.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    source_fd, fd = _open_path(str(source)), _open_path(str(target))
    try:
        assert not mounts.mount_state(fd).is_mount_root
        mounts.bind_mount(source_fd, fd, attrs, lambda: _open_path(str(target)))
    finally:
        os.close(fd)
        os.close(source_fd)
    assert mounts._new_api_usable == (mount_api == "new-api")  # the fallback was not just skipped
    fd = _open_path(str(target))
    try:
        assert mounts.mount_state(fd).is_mount_root
        assert mounts.mounted_attrs(fd) & LOCKED == attrs
        assert (str(source).replace(str(tmp_path), ""), str(target)) in {
            (e.root.replace(str(tmp_path), ""), e.mount_point) for e in mounts.mount_table()}
        assert mounts._in_mountinfo(str(target))  # the pre-5.8 fallback agrees
        assert mounts.mount_source(fd).endswith("/source dir")
        mounts.unmount(fd)
    finally:
        os.close(fd)
    fd = _open_path(str(target))
    try:
        assert not mounts.mount_state(fd).is_mount_root
    finally:
        os.close(fd)


def test_mounts_the_descriptor_not_the_name(tmp_path, mount_api):
    """Renaming the source and putting something else at its name after it was
    opened changes nothing: the inode behind the descriptor is mounted."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "real").touch()
    target = tmp_path / "target"
    target.mkdir()
    source_fd = _open_path(str(source))
    os.rename(source, tmp_path / "moved")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "decoy").touch()
    os.symlink(decoy, source)
    fd = _open_path(str(target))
    try:
        mounts.bind_mount(source_fd, fd, Attr.RDONLY, lambda: _open_path(str(target)))
    finally:
        os.close(fd)
        os.close(source_fd)
    try:
        assert os.listdir(target) == ["real"]
    finally:
        fd = _open_path(str(target))
        mounts.unmount(fd)
        os.close(fd)


def test_add_attrs_to_an_existing_mount(tmp_path, mount_api):
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    source_fd, fd = _open_path(str(source)), _open_path(str(target))
    mounts.bind_mount(source_fd, fd)
    os.close(fd)
    os.close(source_fd)
    fd = _open_path(str(target))
    try:
        assert not mounts.mounted_attrs(fd) & (Attr.RDONLY | Attr.NOEXEC)
        mounts.add_attrs(fd, Attr.RDONLY | Attr.NOEXEC)
        assert mounts.mounted_attrs(fd) & (Attr.RDONLY | Attr.NOEXEC) == Attr.RDONLY | Attr.NOEXEC
        mounts.unmount(fd)
    finally:
        os.close(fd)
