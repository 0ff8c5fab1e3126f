"""In-process references: the syscall floor and the approaches the driver avoids.

- the floor: one bind mount plus its unmount, by syscall, in this process
  (through ``csi_driver.mounts`` and through a bare ``mount(2)``/``umount2(2)``);
- exec'ing ``mount --bind`` and ``umount``, as the reference driver does;
- the mount-point check, by ``statx`` (what the driver uses) and by scanning
  ``/proc/self/mountinfo`` (the reference approach, and the driver's fallback
  for kernels before 5.8).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time

from csi_driver import mounts
from csi_driver.volumes.sockets import MOUNT_ATTRS

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_clock = time.perf_counter


def _check(rc: int, call: str, path: bytes) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call} {path.decode()}: {os.strerror(err)}")


def pair_driver_mounts(source: str, target: str, n: int) -> list[float]:
    """Bind (with the socket volumes' options) + unmount through csi_driver.mounts,
    source and target by descriptor, as the driver does it."""
    samples = []
    for _ in range(n):
        started = _clock()
        source_fd = os.open(source, _PATH_FLAGS)
        fd = os.open(target, _PATH_FLAGS)
        try:
            mounts.bind_mount(source_fd, fd, MOUNT_ATTRS)
        finally:
            os.close(fd)
            os.close(source_fd)
        fd = os.open(target, _PATH_FLAGS)  # now the mount's root
        try:
            mounts.unmount(fd)
        finally:
            os.close(fd)
        samples.append(_clock() - started)
    return samples


# Larger than the last-level cache of the machines the benchmark runs on.
_EVICTION_BYTES = 64 << 20


def pair_plain_syscalls(source: str, target: str, n: int, cold_caches: bool = False) -> list[float]:
    """Bind + unmount with a bare mount(2) and umount2(2) on the path; with
    ``cold_caches``, after overwriting more memory than the CPU caches hold
    before each pair (outside the timing), as a server's other work between
    two calls does."""
    src, tgt = os.fsencode(source), os.fsencode(target)
    samples = []
    scratch = bytearray(_EVICTION_BYTES) if cold_caches else None
    for _ in range(n):
        if scratch is not None:
            scratch[:] = bytes(_EVICTION_BYTES)
        started = _clock()
        _check(_libc.mount(src, tgt, None, mounts.MS_BIND, None), "mount", tgt)
        _check(_libc.umount2(tgt, 0), "umount2", tgt)
        samples.append(_clock() - started)
    return samples


def pair_exec(source: str, target: str, n: int) -> list[float]:
    """Bind + unmount by exec'ing mount(8) and umount(8)."""
    samples = []
    for _ in range(n):
        started = _clock()
        subprocess.run(["mount", "--bind", source, target], check=True)
        subprocess.run(["umount", target], check=True)
        samples.append(_clock() - started)
    return samples


def check_statx(mount_point: str, n: int) -> list[float]:
    """One mount-point check as the driver makes it: statx on an fd it holds."""
    fd = os.open(mount_point, _PATH_FLAGS)
    try:
        if not mounts.is_mount_root(fd):
            raise RuntimeError(f"{mount_point} should be a mount point (statx)")
        samples = []
        for _ in range(n):
            started = _clock()
            mounts.is_mount_root(fd)
            samples.append(_clock() - started)
        return samples
    finally:
        os.close(fd)


def check_mountinfo(mount_point: str, n: int) -> list[float]:
    """One mount-point check by scanning /proc/self/mountinfo (the driver's fallback)."""
    if not mounts._in_mountinfo(mount_point):
        raise RuntimeError(f"{mount_point} should be a mount point (mountinfo)")
    samples = []
    for _ in range(n):
        started = _clock()
        mounts._in_mountinfo(mount_point)
        samples.append(_clock() - started)
    return samples


def bind(source: str, target: str) -> None:
    _check(_libc.mount(os.fsencode(source), os.fsencode(target), None, mounts.MS_BIND, None),
           "mount", os.fsencode(target))


def unmount(target: str) -> None:
    _check(_libc.umount2(os.fsencode(target), 0), "umount2", os.fsencode(target))


def mount_table_size() -> int:
    return sum(1 for _ in mounts.mount_table())
