"""Linux inotify through the C library: be told when a directory gains an entry.

Only what waiting for a path to appear needs: one non-blocking instance, watches
added and removed, and the events read from it. A watch may be placed through
``/proc/self/fd/N`` of a directory opened without following symlinks, so what is
watched is the directory that was checked, not whatever a path names later.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import NamedTuple

# <sys/inotify.h>
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (of the name that follows)
_READ_SIZE = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


class Event(NamedTuple):
    wd: int
    mask: int
    name: str  # the entry's name for events on a directory's entries, else ""


def _error(call: str, path: str | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{call}: {os.strerror(code)}", path)


class Inotify:
    """One inotify instance; ``fd`` becomes readable when events are queued."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _error("inotify_init1")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int:
        """The watch descriptor; the same one again for a directory already watched."""
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise _error("inotify_add_watch", path)
        return int(wd)

    def remove_watch(self, wd: int) -> None:
        """Stop watching; a watch the kernel already dropped (its directory is gone) is fine."""
        if _libc.inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            raise _error("inotify_rm_watch")

    def read(self) -> list[Event]:
        """The events queued now (none when there are none)."""
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw = data[offset:offset + length].split(b"\0", 1)[0]
            offset += length
            events.append(Event(wd, mask, os.fsdecode(raw)))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
