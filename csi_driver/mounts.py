"""Mount syscalls and O(1) mount-point detection, all through file descriptors.

Everything the driver asks of the mount table goes through this module's
functions (``bind_mount``, ``unmount``, ``is_mount_root``, ``mounted_identity``,
``mounted_attrs``, ``mount_source``), called as module attributes: the unit
tests replace them with an in-memory mount table and run without root.

Every operation takes a file descriptor for the target (opened without
following symlinks by ``csi_driver.targets``), so what gets mounted over or
unmounted is exactly the inode that was validated, whatever happens to the
path in between.

The source is a descriptor too (see ``csi_driver.sources``): what gets mounted
is the inode that was opened and checked, never a path resolved again.

Mounting prefers the new mount API (``open_tree`` + ``mount_setattr`` +
``move_mount``, Linux >= 5.12): the bind mount is cloned from the source fd,
detached, given its options (read-only, nosuid, ...) before anyone can see it,
and attached straight onto the target fd. Older kernels fall back to
``mount(2)`` through the ``/proc/self/fd/N`` links, by way of a private staging
mount so that the options are there before the mount propagates (``_Staging``).

Mount-point detection uses ``statx``'s ``STATX_ATTR_MOUNT_ROOT`` (Linux >= 5.8)
on the target's fd, which costs one syscall however many mounts the node has
(``bench/run.sh`` measures it flat from 10 to 10,000 mounts). Where that
attribute is unavailable (older kernels, a C library without ``statx``, or a
``statx`` that fails) it falls back to scanning ``/proc/self/mountinfo``, which
is linear in the mount table (about 30 ms at 10,000 mounts).
"""

from __future__ import annotations

import ctypes
import enum
import errno
import itertools
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator
from typing import NamedTuple

_libc = ctypes.CDLL(None, use_errno=True)

# <linux/mount.h>, <sys/mount.h>, <fcntl.h>
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
STATX_INO = 0x100
STATX_ATTR_MOUNT_ROOT = 0x2000

# The mount API syscalls share one number on every architecture (they were
# added after the syscall tables were unified).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_NEW_API = sys.platform == "linux"

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class MountError(OSError):
    def __init__(self, errno_: int, message: str, call: str = "") -> None:
        super().__init__(errno_, message)
        self.call = call  # the syscall that failed


def _raise(call: str, path: str) -> None:
    err = ctypes.get_errno()
    raise MountError(err, f"{call} failed on {path}: {os.strerror(err)}", call)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("_reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16),
        ("_spare0", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64),
        ("stx_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _StatxTimestamp),
        ("stx_btime", _StatxTimestamp),
        ("stx_ctime", _StatxTimestamp),
        ("stx_mtime", _StatxTimestamp),
        ("stx_rdev_major", ctypes.c_uint32),
        ("stx_rdev_minor", ctypes.c_uint32),
        ("stx_dev_major", ctypes.c_uint32),
        ("stx_dev_minor", ctypes.c_uint32),
        ("stx_mnt_id", ctypes.c_uint64),
        ("_spare", ctypes.c_uint64 * 13),
    ]


_HAS_STATX = hasattr(_libc, "statx")
if _HAS_STATX:
    _libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_Statx)]


# (st_dev, st_ino): what a mount pins, and what the agent changes when it
# re-creates its socket or its directory.
Identity = tuple[int, int]


def identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino


def mounted_identity(fd: int) -> Identity:
    """The identity of what the inode behind ``fd`` shows: for a mount root, the
    mounted source's."""
    return identity(os.fstat(fd))


def fd_path(fd: int) -> str:
    """A path that resolves to exactly the inode behind ``fd`` (procfs magic link)."""
    return f"/proc/self/fd/{fd}"


def is_mount_root(fd: int) -> bool:
    """Whether the inode behind ``fd`` is the root of a mount, in one syscall."""
    if _HAS_STATX:
        buf = _Statx()
        rc = _libc.statx(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_INO, ctypes.byref(buf))
        if rc == 0 and buf.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT:
            return bool(buf.stx_attributes & STATX_ATTR_MOUNT_ROOT)
    return _in_mountinfo(os.readlink(fd_path(fd)))


MOUNTINFO = "/proc/self/mountinfo"
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


class MountEntry(NamedTuple):
    """One line of a mountinfo table, its path fields unescaped."""

    root: str  # the mount's root inside its filesystem ("//deleted" appended when unlinked)
    mount_point: str
    options: tuple[str, ...]  # per-mount options: ro/rw, nosuid, nodev, noexec, ...


def _unescape(field: bytes) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field))


def mount_table(mountinfo: str = MOUNTINFO) -> Iterator[MountEntry]:
    """Every mount of a mountinfo table (this process's namespace by default),
    in order: later entries are mounted on top of earlier ones."""
    with open(mountinfo, "rb") as table:
        for line in table:
            fields = line.split(b" ", 6)
            yield MountEntry(_unescape(fields[3]), _unescape(fields[4]),
                             tuple(fields[5].decode().split(",")))


def entry_at(mount_point: str, mountinfo: str = MOUNTINFO) -> MountEntry | None:
    """The topmost mount at ``mount_point``, or None: linear, for diagnostics and tests."""
    found = None
    for entry in mount_table(mountinfo):
        if entry.mount_point == mount_point:
            found = entry
    return found


def mount_source(mount_root_fd: int) -> str:
    """The source (root inside its filesystem) of the mount behind ``mount_root_fd``,
    from the mount table: linear, for diagnostics only."""
    entry = entry_at(os.readlink(fd_path(mount_root_fd)))
    return entry.root if entry is not None else ""


def _in_mountinfo(path: str) -> bool:
    """Fallback for kernels before 5.8: linear scan of this namespace's mount table."""
    return any(entry.mount_point == path for entry in mount_table())


class Attr(enum.IntFlag):
    """Per-mount options, with the values of ``MOUNT_ATTR_*`` in <linux/mount.h>."""

    RDONLY = 0x1
    NOSUID = 0x2
    NODEV = 0x4
    NOEXEC = 0x8


NONE = Attr(0)
# mount(2)'s MS_* flag and statvfs's ST_* flag for each attribute.
_MS_FLAG = {Attr.RDONLY: 0x1, Attr.NOSUID: 0x2, Attr.NODEV: 0x4, Attr.NOEXEC: 0x8}
_ST_FLAG = {Attr.RDONLY: os.ST_RDONLY, Attr.NOSUID: os.ST_NOSUID, Attr.NODEV: os.ST_NODEV,
            Attr.NOEXEC: os.ST_NOEXEC}


def mounted_attrs(fd: int) -> Attr:
    """The options of the mount that the inode behind ``fd`` is seen through."""
    flags = os.fstatvfs(fd).f_flag
    attrs = NONE
    for attr, st_flag in _ST_FLAG.items():
        if flags & st_flag:
            attrs |= attr
    return attrs


def _ms_flags(attrs: Attr) -> int:
    return sum(ms for attr, ms in _MS_FLAG.items() if attrs & attr)


_new_api_usable = _NEW_API


def bind_mount(source_fd: int, target_fd: int, attrs: Attr = NONE) -> None:
    """Bind-mount the inode behind ``source_fd`` onto the one behind ``target_fd``,
    with ``attrs`` from the moment it is attached.

    Both are descriptors (``O_PATH`` is enough): the source is exactly what the
    caller opened and checked, never a path resolved again here.
    """
    global _new_api_usable
    if _new_api_usable:
        try:
            _bind_mount_new_api(source_fd, target_fd, attrs)
            return
        except MountError as err:
            if err.errno != errno.ENOSYS:
                raise
            _new_api_usable = False
    _bind_mount_classic(source_fd, target_fd, attrs)


def _bind_mount_new_api(source_fd: int, target_fd: int, attrs: Attr) -> None:
    tree = _libc.syscall(_SYS_OPEN_TREE, source_fd, b"",
                         ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH))
    if tree < 0:
        _raise("open_tree", _describe(source_fd))
    try:
        if attrs:
            _mount_setattr(tree, attrs, source_fd)
        rc = _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", target_fd, b"",
                           ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
        if rc < 0:
            _raise("move_mount", _describe(source_fd))
    finally:
        os.close(tree)


def _mount_setattr(fd: int, attrs: Attr, source_fd: int) -> None:
    attr = _MountAttr(attr_set=int(attrs))
    rc = _libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", ctypes.c_uint(AT_EMPTY_PATH),
                       ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if rc < 0:
        _raise("mount_setattr", _describe(source_fd))  # the path only when it is shown


# --------------------------------------------------- mount(2) fallback

class _Staging:
    """A private mount where the ``mount(2)`` fallback prepares a bind mount.

    ``mount(2)`` cannot create a bind mount with options: it takes a remount
    afterwards. Done on the target, that remount would come too late: the
    plain mount has already propagated to the host (through the Bidirectional
    pods directory), and option changes do not propagate, so the pod would get
    it read-write. So the bind mount is made here first, where nothing else can
    see it, remounted with its options, and only then copied onto the target:
    a copy carries its options, and so do its propagated copies.
    """

    def __init__(self) -> None:
        self.directory: str | None = None
        self._ready = False
        self._lock = threading.Lock()
        self._serial = itertools.count()

    def point(self, is_dir: bool) -> str:
        """A new empty mount point inside the private staging mount."""
        area = self._area()
        path = os.path.join(area, f"{os.getpid()}-{next(self._serial)}")
        if is_dir:
            os.mkdir(path, 0o700)
        else:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        return path

    def _area(self) -> str:
        with self._lock:
            if self.directory is not None and not self._ready:
                try:
                    os.makedirs(self.directory, 0o700, exist_ok=True)
                except OSError:  # a read-only root filesystem without the storage volume
                    self.directory = None
            if self.directory is None:
                # /dev/shm is writable in a container whose root filesystem is not.
                import tempfile  # only on this fallback, kernels before 5.12

                shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
                self.directory = tempfile.mkdtemp(prefix="csi-mount-staging-", dir=shm)
            if not self._ready:
                area = os.fsencode(self.directory)
                # Its own mount, private: what is mounted inside never propagates.
                if _libc.mount(area, area, None, MS_BIND, None) != 0:
                    _raise("mount", self.directory)
                if _libc.mount(None, area, None, MS_PRIVATE, None) != 0:
                    _raise("mount", self.directory)
                self._ready = True
            return self.directory


_staging = _Staging()


def set_staging_dir(path: str) -> None:
    """Where the ``mount(2)`` fallback prepares its mounts: a directory only this
    process uses, on a writable filesystem (the driver's storage directory)."""
    _staging.directory = path


def _bind_mount_classic(source_fd: int, target_fd: int, attrs: Attr) -> None:
    # The procfs magic links resolve to exactly the inodes behind the fds.
    target = fd_path(target_fd).encode()
    if not attrs:
        if _libc.mount(fd_path(source_fd).encode(), target, None, MS_BIND, None) != 0:
            _raise("mount", _describe(source_fd))
        return
    point = _staging.point(stat.S_ISDIR(os.fstat(source_fd).st_mode))
    staged = os.fsencode(point)
    try:
        if _libc.mount(fd_path(source_fd).encode(), staged, None, MS_BIND, None) != 0:
            _raise("mount", _describe(source_fd))
        try:
            if _libc.mount(None, staged, None, MS_REMOUNT | MS_BIND | _ms_flags(attrs), None) != 0:
                _raise("mount", _describe(source_fd))
            if _libc.mount(staged, target, None, MS_BIND, None) != 0:
                _raise("mount", _describe(source_fd))
        finally:
            _libc.umount2(staged, MNT_DETACH)
    finally:
        if stat.S_ISDIR(os.lstat(point).st_mode):
            os.rmdir(point)
        else:
            os.unlink(point)


def _describe(fd: int) -> str:
    try:
        return os.readlink(fd_path(fd))
    except OSError:
        return fd_path(fd)


def unmount(mount_root_fd: int) -> None:
    """Unmount the mount whose root is behind ``mount_root_fd``, lazily.

    The unmount goes through ``mount_root_fd`` so that exactly the validated
    mount is removed, and that descriptor itself holds a reference to the
    mount: a plain ``umount2`` would always fail with EBUSY. So the mount is
    detached (``MNT_DETACH``): it leaves the mount table at once and is freed
    when the last reference goes, ours included. That is also right for a
    mount some process still uses: the kubelet only unpublishes after the
    pod's containers are gone, so what remains is a straggler that must not
    keep the volume published forever.
    """
    if _libc.umount2(fd_path(mount_root_fd).encode(), MNT_DETACH) != 0:
        _raise("umount2", os.readlink(fd_path(mount_root_fd)))
