"""csi_driver.mounts against the real kernel."""

from __future__ import annotations

import os

import pytest

from csi_driver import mounts


def _open_path(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)


@pytest.mark.parametrize("readonly", [False, True])
def test_bind_detect_unmount(tmp_path, readonly):
    source = tmp_path / "source dir"  # a space: mountinfo escapes it
    source.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    fd = _open_path(str(target))
    try:
        assert not mounts.mount_state(fd).is_mount_root
        mounts.bind_mount(str(source), fd, readonly)
    finally:
        os.close(fd)
    fd = _open_path(str(target))
    try:
        assert mounts.mount_state(fd).is_mount_root
        assert bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY) == readonly
        assert (str(source).replace(str(tmp_path), ""), str(target)) in {
            (root.replace(str(tmp_path), ""), point) for root, point in mounts.mount_table()}
        assert mounts._in_mountinfo(str(target))  # the pre-5.8 fallback agrees
        mounts.unmount(fd)
    finally:
        os.close(fd)
    fd = _open_path(str(target))
    try:
        assert not mounts.mount_state(fd).is_mount_root
    finally:
        os.close(fd)


def test_missing_source_is_reported_as_such(tmp_path):
    target = tmp_path / "target"
    target.touch()
    fd = _open_path(str(target))
    try:
        with pytest.raises(mounts.MountError) as err:
            mounts.bind_mount(str(tmp_path / "gone.socket"), fd, False)
    finally:
        os.close(fd)
    assert err.value.source_missing
