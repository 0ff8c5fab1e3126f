"""``<storage>/store/<digest>``: one directory per library image, whole or absent.

A library is unpacked into a scratch directory under ``<storage>/tmp`` and
renamed into the store once complete, so a publish never sees half an image;
a failed pull removes its scratch directory, and the scratch directories a
crashed process left are removed when the store is opened. Deleting an entry
is the same in reverse: renamed out of the store first, then removed.

What gets mounted is a directory inside an entry. It is reached from the store
one component at a time without following symlinks (an image may hold
symlinks, and a pod must never get a mount of what one points to) and checked
to lie inside the entry, then handed over as an ``O_PATH`` descriptor, as the
socket family does with the agent's sockets.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from csi_driver.mounts import fd_path
from csi_driver.targets import Blocked, descend

log = logging.getLogger(__name__)
STORE = "store"
SCRATCH = "tmp"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
ENTRY_MODE = 0o755
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ContentMissing(Exception):
    """The directory to mount is not in the entry (or is not a real directory)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Scratch:
    """A directory a library is unpacked into, open as ``fd``."""

    path: str
    fd: int


class Store:
    def __init__(self, storage: str) -> None:
        self.root = os.path.join(storage, STORE)
        self.scratch_root = os.path.join(storage, SCRATCH)
        os.makedirs(self.root, ENTRY_MODE, exist_ok=True)
        os.makedirs(self.scratch_root, 0o700, exist_ok=True)
        for name in os.listdir(self.scratch_root):
            log.info("removing a library left half-written by an earlier process",
                     extra={"path": os.path.join(self.scratch_root, name)})
            remove_tree(os.path.join(self.scratch_root, name))

    def entry(self, digest: str) -> str:
        if not DIGEST.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return os.path.join(self.root, digest)

    def digests(self) -> list[str]:
        return sorted(name for name in os.listdir(self.root) if DIGEST.match(name))

    def has(self, digest: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.entry(digest)).st_mode)
        except FileNotFoundError:
            return False

    @contextmanager
    def scratch(self) -> Iterator[Scratch]:
        """A new empty directory under ``<storage>/tmp``, removed unless committed."""
        path = tempfile.mkdtemp(prefix="pull-", dir=self.scratch_root)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            yield Scratch(path, fd)
        finally:
            os.close(fd)
            if os.path.lexists(path):
                remove_tree(path)

    def commit(self, scratch: Scratch, digest: str) -> None:
        """Move a complete library into the store under ``digest``."""
        os.chmod(scratch.fd, ENTRY_MODE)  # mkdtemp made it 0700
        try:
            os.rename(scratch.path, self.entry(digest))
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Already there (stored by an earlier process, not yet known to
            # it): the one in place is kept, this copy goes with the scratch.

    def open_content(self, digest: str, content: str) -> int:
        """An ``O_PATH`` descriptor of ``<entry>/<content>``, a real directory
        inside the entry; raises ContentMissing otherwise."""
        entry = self.entry(digest)
        fd = self._walk(os.open(self.root, _DIR_FLAGS), [digest, *content.split("/")], self.root)
        try:
            resolved = os.readlink(fd_path(fd))
            if not resolved.startswith(entry + "/"):
                raise ContentMissing(resolved, f"resolves outside the library's directory {entry}")
            return fd
        except BaseException:
            os.close(fd)
            raise

    def check_content(self, scratch: Scratch, content: str) -> None:
        """Raise ContentMissing unless ``content`` is a real directory in ``scratch``."""
        os.close(self._walk(os.dup(scratch.fd), content.split("/"), scratch.path))

    @staticmethod
    def _walk(fd: int, names: list[str], base: str) -> int:
        try:
            return descend(fd, names, base)
        except Blocked as stop:
            reason = ("is a symlink; the directory a library volume mounts must be a real "
                      "directory" if stop.symlink else os.strerror(stop.errno))
            raise ContentMissing(stop.path, reason) from None

    def detach(self, digest: str) -> str | None:
        """Take an entry out of the store (a rename: no publish can open it from
        now on); return where it went, for ``remove_tree``, or None if absent."""
        away = tempfile.mkdtemp(prefix="remove-", dir=self.scratch_root)
        moved = os.path.join(away, digest)
        try:
            os.rename(self.entry(digest), moved)
        except FileNotFoundError:
            os.rmdir(away)
            return None
        return away


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it, never following a symlink.

    Images may hold read-only directories: without CAP_DAC_OVERRIDE (tests
    run so) their modes are lifted first.
    """
    if not os.path.isdir(path) or os.path.islink(path):
        if os.path.lexists(path):
            os.unlink(path)
        return
    try:
        shutil.rmtree(path)
    except PermissionError:
        _lift_modes(path)
        shutil.rmtree(path)


def _lift_modes(directory: str) -> None:
    os.chmod(directory, 0o700)
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _lift_modes(entry.path)
