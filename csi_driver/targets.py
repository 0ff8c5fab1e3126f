"""Target-path validation and race-free access to the target's parent.

The kubelet hands the driver a path such as
``/var/lib/kubelet/pods/<pod-uid>/volumes/kubernetes.io~csi/<volume>/mount``.
A privileged mounter that trusts such a path can be steered into mounting over
anything on the host, so the path is checked twice:

1. Lexically (``parse``): absolute, normalized (no ``.``, ``..``, ``//``), no
   NUL, sane lengths, and exactly the kubelet's pod-volume layout under the
   configured pods directory.
2. On disk (``open_parent``): every directory below the pods directory is
   opened one component at a time with ``O_NOFOLLOW``, so a symlink anywhere in
   the path is refused, and the final parent is held as a file descriptor. All
   later work (creating, mounting, unmounting the target) goes through that
   descriptor, so swapping a directory for a symlink after validation cannot
   redirect the mount.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from csi_driver.errors import RequestError, invalid, precondition
from csi_driver.resolve import open_beneath

PATH_MAX = 4096
NAME_MAX = 255
# <pods>/<pod-uid>/volumes/kubernetes.io~csi/<volume-name>/<leaf>: the kubelet
# names the leaf "mount"; other COs and csi-sanity pick their own name.
CSI_PLUGIN_DIR = "kubernetes.io~csi"
LAYOUT = ("<pod-uid>", "volumes", CSI_PLUGIN_DIR, "<volume-name>", "mount")
_DIR_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


class ParentMissing(RequestError):
    """A directory of the target's path does not exist (the pod may be gone)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.FAILED_PRECONDITION, message)


@dataclass(frozen=True)
class Target:
    path: str
    pods_dir: str
    components: tuple[str, ...]  # below pods_dir, leaf last

    @property
    def leaf(self) -> str:
        return self.components[-1]

    @property
    def pod_uid(self) -> str:
        return self.components[0]


def parse(raw: str, pods_dir: str, field: str = "target_path") -> Target:
    if not raw:
        raise invalid(f"{field} is required")
    if "\0" in raw:
        raise invalid(f"{field} contains a NUL byte")
    if len(os.fsencode(raw)) >= PATH_MAX:
        raise invalid(f"{field} is longer than {PATH_MAX - 1} bytes")
    if not raw.startswith("/"):
        raise invalid(f"{field} must be an absolute path, got {raw!r}")
    parts = raw.split("/")[1:]
    if any(part in (".", "..") for part in parts):
        raise invalid(f"{field} {raw!r} contains '.' or '..' components; refusing to resolve it")
    if os.path.normpath(raw) != raw:
        raise invalid(f"{field} {raw!r} is not normalized (repeated or trailing '/')")
    prefix = pods_dir + "/"
    if not raw.startswith(prefix):
        raise invalid(
            f"{field} {raw!r} is outside the kubelet pods directory {pods_dir}; this driver only "
            "mounts into pod volume directories (check --kubelet-root-dir)"
        )
    components = tuple(raw[len(prefix):].split("/"))
    if any(len(os.fsencode(part)) > NAME_MAX for part in components):
        raise invalid(f"{field} has a path component longer than {NAME_MAX} bytes")
    if (
        len(components) != len(LAYOUT)
        or components[1] != LAYOUT[1]
        or components[2] != LAYOUT[2]
    ):
        raise invalid(
            f"{field} {raw!r} does not follow the kubelet's volume layout "
            f"{pods_dir}/{'/'.join(LAYOUT)}"
        )
    return Target(path=raw, pods_dir=pods_dir, components=components)


def open_parent(target: Target) -> int:
    """Open the target's parent directory without following any symlink below
    the pods directory; the caller owns (and must close) the returned fd."""
    try:
        fd = os.open(target.pods_dir, _DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        raise precondition(
            f"kubelet pods directory {target.pods_dir} does not exist (check --kubelet-root-dir "
            "and that the directory is mounted into the driver container)"
        ) from None
    try:
        return descend(fd, target.components[:-1], target.pods_dir)
    except Blocked as stop:
        if stop.errno == errno.ENOENT:
            raise ParentMissing(
                f"{stop.path} does not exist; the kubelet creates the parent of the target path "
                "before publishing, so the pod may already be gone"
            ) from None
        if stop.errno in (errno.ENOTDIR, errno.ELOOP):
            raise invalid(f"{stop.path} is a symlink; symlinks are refused anywhere in the target "
                          "path" if stop.symlink else f"{stop.path} is not a directory") from None
        raise OSError(stop.errno, os.strerror(stop.errno), stop.path) from None


class Blocked(Exception):
    """A walk (``descend``) could not open ``path`` as a directory without following a symlink."""

    def __init__(self, err: OSError, path: str, symlink: bool) -> None:
        super().__init__(path, err.strerror)
        self.errno = err.errno or 0
        self.path = path
        self.symlink = symlink  # it is a symlink (ELOOP or ENOTDIR then)


def descend(fd: int, names: Iterable[str], base: str) -> int:
    """From the directory behind ``fd`` (taken over: closed, or replaced by the
    result), open each of ``names`` in turn with ``O_NOFOLLOW``; return the fd
    of the last. ``base`` is ``fd``'s path, for ``Blocked.path``. The target's
    side and the agent's side of a mount are both reached this way: in one
    ``openat2`` where the kernel has it, else (and to name the component that
    stopped a walk) one component at a time."""
    names = list(names)
    if names:
        fast = open_beneath(fd, "/".join(names), _DIR_FLAGS)
        if fast is not None:
            os.close(fd)
            return fast
    walked = base
    try:
        for name in names:
            walked = f"{walked}/{name}"
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                raise Blocked(err, walked, _is_symlink(fd, name)) from None
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def lstat_leaf(parent_fd: int, leaf: str) -> os.stat_result | None:
    try:
        return os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_leaf(parent_fd: int, leaf: str) -> int:
    """O_PATH fd of the leaf itself (never a symlink's target)."""
    return os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)


def remove_leaf(parent_fd: int, leaf: str, is_dir: bool) -> None:
    """Remove the empty file or directory ``leaf``; already gone is fine."""
    try:
        if is_dir:
            os.rmdir(leaf, dir_fd=parent_fd)
        else:
            os.unlink(leaf, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
