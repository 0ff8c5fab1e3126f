"""One-syscall directory walks: ``openat2`` with ``RESOLVE_NO_SYMLINKS``.

Opening each component of a path with ``O_NOFOLLOW`` in turn is safe, but it
costs two syscalls per component, each a GIL release and reacquire that lets
other calls' threads in. Since Linux 5.6 the kernel walks a whole relative path
under the same rules in one ``openat2``: no symlink anywhere
(``RESOLVE_NO_SYMLINKS``, magic links included) and never above the starting
directory (``RESOLVE_BENEATH``). Where the kernel or a seccomp profile refuses
the syscall, callers keep the component walk; they also use it when
``openat2`` fails, to say which component stopped them.
"""

from __future__ import annotations

import ctypes
import errno
import os


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437  # one number on every architecture (added after the tables were unified)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# Refusals that mean "not here" rather than "not this path": seccomp profiles
# answer ENOSYS or EPERM for syscalls they do not know.
_UNAVAILABLE = (errno.ENOSYS, errno.EPERM, errno.E2BIG, errno.EINVAL)
_available = True


def open_beneath(dir_fd: int, path: str, flags: int) -> int | None:
    """An fd of ``path`` under ``dir_fd``, reached without any symlink, or None
    when that cannot be done in one syscall (the caller walks instead)."""
    global _available
    if not _available:
        return None
    how = _OpenHow(flags, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH)
    fd = int(_libc.syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how),
                           ctypes.sizeof(how)))
    if fd >= 0:
        return fd
    if ctypes.get_errno() in _UNAVAILABLE:
        _available = False
    return None
