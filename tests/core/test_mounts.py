"""csi_driver.mounts against the real kernel."""

from __future__ import annotations

import os
import subprocess
import sys

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
        assert not mounts.is_mount_root(fd)
        mounts.bind_mount(source_fd, fd, attrs)
    finally:
        os.close(fd)
        os.close(source_fd)
    assert mounts._new_api_usable == (mount_api == "new-api")  # the fallback was not just skipped
    fd = _open_path(str(target))
    try:
        assert mounts.is_mount_root(fd)
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
        assert not mounts.is_mount_root(fd)
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
        mounts.bind_mount(source_fd, fd, Attr.RDONLY)
    finally:
        os.close(fd)
        os.close(source_fd)
    try:
        assert os.listdir(target) == ["real"]
    finally:
        fd = _open_path(str(target))
        mounts.unmount(fd)
        os.close(fd)


_PEER_BIND = """
import os, sys
from csi_driver import mounts
mounts._new_api_usable = sys.argv[1] == "new-api"
mounts.set_staging_dir(sys.argv[4])
flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
mounts.bind_mount(os.open(sys.argv[2], flags), os.open(sys.argv[3], flags), mounts.Attr(int(sys.argv[5])))
"""


@pytest.fixture
def shared_dir(tmp_path):
    """A shared mount, as the kubelet's pods directory is with Bidirectional propagation."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    yield shared
    subprocess.run(["umount", "--recursive", "--lazy", str(shared)], check=True)


@pytest.mark.parametrize("api", ["new-api", "classic"])
def test_options_reach_the_propagated_copies(tmp_path, shared_dir, api):
    """The driver mounts in its own namespace; the kubelet hands the pod the
    host's copy. Options set after the mount exists would stay on the driver's
    side, so a peer namespace must see the mount with them too."""
    source = tmp_path / "source"
    source.mkdir()
    target = shared_dir / "target"
    target.mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(["unshare", "--mount", "--propagation", "unchanged", sys.executable, "-c",
                    _PEER_BIND, api, str(source), str(target), str(tmp_path / "staging"),
                    str(int(LOCKED))], check=True, cwd=repo)
    entry = mounts.entry_at(str(target))
    assert entry is not None, "the mount did not propagate back"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(entry.options), entry.options
    # The staging mount stayed private to the peer namespace.
    assert not [e for e in mounts.mount_table() if e.mount_point.startswith(str(tmp_path / "staging"))]
