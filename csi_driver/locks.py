"""Per-key locks so calls for one volume or one target never interleave.

Calls for different volumes run in parallel (a node starting 100 pods at once);
calls that share a volume id or a target path wait for each other. Keys are
always taken in sorted order, so two calls sharing both keys cannot deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from csi_driver.admission import waiting


class KeyedLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def _acquire_ref(self, key: str) -> threading.Lock:
        with self._guard:
            lock, refs = self._locks.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._locks[key] = (lock, refs + 1)
            return lock

    def _release_ref(self, key: str) -> None:
        with self._guard:
            lock, refs = self._locks[key]
            if refs == 1:
                del self._locks[key]  # keep the table as small as the work in flight
            else:
                self._locks[key] = (lock, refs - 1)

    @contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        taken: list[tuple[str, threading.Lock]] = []
        try:
            for key in sorted(set(keys)):
                lock = self._acquire_ref(key)
                try:
                    if not lock.acquire(blocking=False):
                        # The holder may be waiting on a download or for the
                        # agent; so may this call, then, without keeping the
                        # turn of calls for other volumes.
                        with waiting():
                            lock.acquire()
                except BaseException:  # interrupted while waiting: the lock is not ours
                    self._release_ref(key)
                    raise
                taken.append((key, lock))
            yield
        finally:
            for key, lock in reversed(taken):
                lock.release()
                self._release_ref(key)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)
