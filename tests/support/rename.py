"""Atomic path swaps, for tests that race the driver against a changing tree."""

from __future__ import annotations

import ctypes
import os

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: str, b: str) -> None:
    """Swap what the two paths name, atomically (``renameat2(RENAME_EXCHANGE)``)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)
