"""Delete libraries no volume has used for the cleanup delay, on a thread of their own.

A library is not deleted when its last volume goes: a rollout replaces pods a
few at a time, and the next pod asking for the same library should find it.
The delay counts from the moment the last volume released it (persisted, so a
restart does not start it over). The timer thread sleeps until the earliest
library is due, or until ``poke`` says something changed; publish and
unpublish calls never wait for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
IMMEDIATE, DELAYED = "immediate", "delayed"  # the metrics ``strategy`` label
# Upper bound on a sleep: wall-clock jumps and missed pokes are caught up with.
MAX_SLEEP = 60.0


class CleanupTimer:
    def __init__(self, due: Callable[[float], tuple[list[str], float | None]],
                 collect: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        """``due(now)``: the digests to collect now and when the next one will
        be due (None: none is waiting); ``collect(digest)`` deletes one, after
        checking again that nothing uses it."""
        self._due, self._collect, self._clock = due, collect, clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="library-cleanup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Something was released: look again now rather than at the next due time."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            sleep = MAX_SLEEP
            try:
                digests, next_due = self._due(self._clock())
                for digest in digests:
                    if self._stopping.is_set():
                        return
                    self._collect(digest)
                if next_due is not None:
                    sleep = min(MAX_SLEEP, max(0.0, next_due - self._clock()))
            except Exception:  # a failed pass is logged and tried again later, never fatal
                log.exception("library cleanup pass failed")
            self._wake.wait(sleep)
