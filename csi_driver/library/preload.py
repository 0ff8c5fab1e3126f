"""``<storage>/ld.so.preload``: the file a DatadogInjectorPreload volume mounts.

The dynamic loader of every process in a pod reads ``/etc/ld.so.preload``; the
injector's admission webhook mounts this file there, so the loader loads the
injector's launcher first. It is written once, atomically (a complete file
renamed into place), and kept as it is while its content is right: the file's
inode is what existing mounts hold, so rewriting it would change nothing for
them and only make republishing see a different file.
"""

from __future__ import annotations

import os
import stat

from csi_driver.mounts import fd_path
from csi_driver.volumes.library import PRELOAD_CONTENT

_LEAF_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def ensure(path: str) -> None:
    """Make ``path`` a regular file holding exactly the launcher line."""
    if _is_current(path):
        return
    partial = f"{path}.partial-{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, PRELOAD_CONTENT)
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(partial, path)
    directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def open_file(path: str) -> int:
    """An ``O_PATH`` descriptor of the preload file, rewritten first if it is not
    the regular file with the launcher line (never a symlink's target)."""
    ensure(path)
    fd = os.open(path, _LEAF_FLAGS)
    if not _holds_launcher(fd):
        os.close(fd)
        raise OSError(f"{path} changed while it was being opened")
    return fd


def _is_current(path: str) -> bool:
    try:
        fd = os.open(path, _LEAF_FLAGS)
    except FileNotFoundError:
        return False
    try:
        return _holds_launcher(fd)
    finally:
        os.close(fd)


def _holds_launcher(path_fd: int) -> bool:
    st = os.fstat(path_fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != len(PRELOAD_CONTENT):
        return False
    fd = os.open(fd_path(path_fd), os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        return os.read(fd, len(PRELOAD_CONTENT) + 1) == PRELOAD_CONTENT
    finally:
        os.close(fd)
