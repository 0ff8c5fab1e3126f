"""Unit tests: no root, no mount namespace, seconds.

What the driver asks of the kernel's mount table goes through the functions of
``csi_driver.mounts``; here they are replaced by ``FakeMountTable``, so the
publish procedure, validation, registry and error mapping run on a plain
temporary directory. Everything else (files, sockets, descriptors) is real.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

import pytest

from csi_driver import mounts
from csi_driver.config import Config
from csi_driver.mounts import Attr, Identity, identity


@dataclass
class _Layer:
    source: Identity
    attrs: Attr
    source_path: str


@dataclass
class FakeMountTable:
    """Mounts by the identity of the inode they cover, each a stack of layers."""

    stacks: dict[Identity, list[_Layer]] = field(default_factory=dict)
    fail_next_bind: int = 0  # errno the next bind_mount fails with

    def bind_mount(self, source_fd: int, target_fd: int, attrs: Attr = mounts.NONE) -> None:
        if self.fail_next_bind:
            code, self.fail_next_bind = self.fail_next_bind, 0
            raise mounts.MountError(code, os.strerror(code), "move_mount")
        self.stacks.setdefault(identity(os.fstat(target_fd)), []).append(
            _Layer(identity(os.fstat(source_fd)), attrs, os.readlink(mounts.fd_path(source_fd))))

    def _top(self, fd: int) -> _Layer | None:
        stack = self.stacks.get(identity(os.fstat(fd)))
        return stack[-1] if stack else None

    def is_mount_root(self, fd: int) -> bool:
        return self._top(fd) is not None

    def mounted_identity(self, fd: int) -> Identity:
        top = self._top(fd)
        return top.source if top else identity(os.fstat(fd))

    def mounted_attrs(self, fd: int) -> Attr:
        top = self._top(fd)
        return top.attrs if top else mounts.NONE

    def mount_source(self, fd: int) -> str:
        top = self._top(fd)
        return top.source_path if top else ""

    def unmount(self, fd: int) -> None:
        key = identity(os.fstat(fd))
        stack = self.stacks.get(key)
        if not stack:
            raise mounts.MountError(errno.EINVAL, "not a mount point", "umount2")
        stack.pop()
        if not stack:
            del self.stacks[key]

    def at(self, path: str) -> list[_Layer]:
        return self.stacks.get(identity(os.lstat(path)), [])


@pytest.fixture
def mount_table(monkeypatch) -> FakeMountTable:
    table = FakeMountTable()
    for name in ("bind_mount", "is_mount_root", "mounted_identity", "mounted_attrs", "mount_source",
                 "unmount"):
        monkeypatch.setattr(mounts, name, getattr(table, name))
    return table


@pytest.fixture
def config(tmp_path, agent, kubelet_root) -> Config:
    return Config(kubelet_root_dir=kubelet_root, dsd_host_socket_path=agent.dsd_path,
                  apm_host_socket_path=agent.apm_path, storage_path=str(tmp_path / "storage"),
                  node_id="unit")
