"""One piece of work per key at a time, shared by every caller that asks meanwhile.

Twenty pods starting at once with the same new library make twenty publishes;
the first one pulls it, the other nineteen wait for that pull and get its
outcome, success or error alike (retrying a failed pull nineteen times over
would only hammer the registry). Work for different keys runs in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class Flights(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Future[T]] = {}

    def run(self, key: str, work: Callable[[], T], timeout: float) -> T:
        """``work()``'s result, computed once for every caller that asks while it
        runs. Raises what it raised, or TimeoutError when ``timeout`` seconds
        pass while waiting for another caller's run."""
        with self._lock:
            running = self._running.get(key)
            if running is None:
                mine: Future[T] = Future()
                self._running[key] = mine
        if running is not None:
            return running.result(timeout=max(0.0, timeout))
        try:
            result = work()
        except BaseException as err:
            mine.set_exception(err)
            raise
        else:
            mine.set_result(result)
            return result
        finally:
            with self._lock:
                del self._running[key]

    def running(self, key: str) -> bool:
        with self._lock:
            return key in self._running
