"""How many calls run handler code at once, the threads they run on, and
letting go of a call's turn to wait.

A call is mostly Python, which holds the GIL: a few calls at a time let one's
syscalls overlap another's Python, and more only add threads fighting over the
GIL. But some calls wait on something slow: a library download, the agent's
socket to appear, or another call for the same volume doing either. Such a
call must not keep the turn the other calls need. ``Pool.run`` admits a few
calls at a time; inside a call, ``waiting()`` gives the call's turn back for
good before it blocks (the rest of it runs unthrottled, so nothing can
deadlock by waiting to get a turn back).

``Pool`` is also the executor grpcio runs calls on. A thread pool that starts a
thread for every call it cannot hand to an idle one would, under a burst, park
a thread per queued call on the turn: 32 callers meant 32 threads, and each
thread's stack, interpreter state and allocator arena stayed in the resident
set afterwards (about 3 MB). So a call is started only while fewer calls than
``turns + 1`` are on their way to a turn or hold one; the others wait in the
pool's queue, and the thread that finishes a call takes the next one itself.
Calls that gave their turn back (they wait on something slow) do not count,
nor does a call whose request is still arriving after ``STALLED_SECONDS``: a
client that stalls mid-call holds a thread, not the queue. Threads stay under
a bound; threads idle for a while exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
IDLE_SECONDS = 60.0
# grpcio runs a call on a pool thread from the moment its headers arrive; the
# thread first waits for the request message, which a client sends at once.
STALLED_SECONDS = 1.0


class _Turn:
    __slots__ = ("pool", "held")

    def __init__(self, pool: Pool) -> None:
        self.pool, self.held = pool, True

    def give_back(self, finished: bool = False) -> None:
        """Once only; ``finished`` when the call itself is done, on a pool thread."""
        if self.held:
            self.held = False
            self.pool._give_back(finished)


_TURN: ContextVar[_Turn | None] = ContextVar("csi_admission_turn", default=None)
_Work = tuple[futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Pool(futures.Executor):
    def __init__(self, turns: int, max_threads: int, name: str = "call",
                 idle_seconds: float = IDLE_SECONDS) -> None:
        if turns < 1 or max_threads <= turns:
            raise ValueError("a pool needs at least one turn and more threads than turns")
        self._lock = threading.Lock()
        self._turn_freed = threading.Condition(self._lock)
        self._changed = threading.Condition(self._lock)  # a thread exited, or the pool went idle
        self._turns = turns
        self._free_turns = turns
        self._turn_waiters = 0  # threads inside ``run`` waiting for a turn
        # Threads running a call that has not reached ``run`` yet, by thread,
        # with when the call started.
        self._arriving: dict[int, float] = {}
        # Threads whose call has left ``run`` and that will soon look at the
        # queue again: no other thread needs starting for what they will take.
        self._finishing: set[int] = set()
        self._queue: deque[_Work] = deque()
        self._pending = 0  # calls submitted and not yet done
        self._threads = 0
        # Parked threads, the most recently parked last: waking the last one
        # first lets the others stay idle long enough to exit.
        self._parked: list[threading.Condition] = []
        self._woken = 0  # threads taken off ``_parked`` that are yet to look at the queue
        self._starting = 0  # threads started that are yet to look at the queue
        self._max_threads = max_threads
        self._idle_seconds = idle_seconds
        self._name = name
        self._started = 0
        self._closed = False

    # ------------------------------------------------------------- turns

    def run(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``call`` once a turn is free; the turn is held until it returns or waits."""
        with self._lock:
            on_a_pool_thread = self._arriving.pop(threading.get_ident(), None) is not None
            if not self._free_turns:
                self._turn_waiters += 1
                try:
                    self._turn_freed.wait_for(self._turn_is_free)
                finally:
                    self._turn_waiters -= 1
            self._free_turns -= 1
        turn = _Turn(self)
        token = _TURN.set(turn)
        try:
            return call(*args, **kwargs)
        finally:
            _TURN.reset(token)
            turn.give_back(finished=on_a_pool_thread)

    def _turn_is_free(self) -> bool:
        return self._free_turns > 0

    def _give_back(self, finished: bool) -> None:
        with self._lock:
            self._free_turns += 1
            if finished:
                self._finishing.add(threading.get_ident())
            if self._turn_waiters:
                self._turn_freed.notify()
            self._dispatch()

    # ---------------------------------------------------------- executor

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> futures.Future[R]:
        future: futures.Future[R] = futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.append((future, fn, args, kwargs))
            self._pending += 1
            self._dispatch()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            cancelled = []
            if cancel_futures:
                while self._queue:
                    cancelled.append(self._queue.popleft()[0])
                    self._call_done()
            self._wake_all()
        # Outside the lock: a cancelled future runs its callbacks, which may take
        # locks whose holders are submitting to this pool.
        for future in cancelled:
            future.cancel()
        with self._lock:
            while wait and self._threads:
                self._changed.wait()

    def wait_idle(self, timeout: float) -> bool:
        """Whether every call submitted has run, waiting up to ``timeout`` seconds:
        queued calls count, not only the ones a handler is running."""
        with self._lock:
            return self._changed.wait_for(lambda: not self._pending, timeout)

    def _call_done(self) -> None:  # with the lock held
        self._pending -= 1
        if not self._pending:
            self._changed.notify_all()

    def _counted_arrivals(self, now: float) -> list[float]:
        """When the arriving calls not yet counted as stalled started (with the lock held)."""
        return [started for started in self._arriving.values() if started > now - STALLED_SECONDS]

    def _room(self) -> int:
        """How many more calls may start now (with the lock held)."""
        arriving = len(self._counted_arrivals(time.monotonic()))
        headed_for_a_turn = self._turns - self._free_turns + self._turn_waiters + arriving
        return self._turns + 1 - headed_for_a_turn

    def _next_look(self) -> float | None:
        """When queued calls need another look although nothing else happens: once
        the oldest arriving call counts as stalled. None when no such look is due."""
        now = time.monotonic()
        counted = self._counted_arrivals(now)
        if not self._queue or not counted:
            return None
        return max(0.01, min(counted) + STALLED_SECONDS - now)

    def _dispatch(self) -> None:  # with the lock held
        """Send an idle or new thread to the queue, if a queued call may start
        and no thread is already on its way there."""
        if not self._queue:
            return
        coming = self._woken + self._starting + len(self._finishing)
        room = self._room()
        if coming >= min(len(self._queue), room):
            unclaimed_turn = self._free_turns > self._turn_waiters
            if room > 0 or coming or not unclaimed_turn or not self._arriving:
                return
            # Only calls whose request is arriving stand between a free turn
            # and the queue, and they report nothing if their client stalls (a
            # call in or waiting for a turn dispatches when it gives the turn
            # back): a parked thread looks again once they count as stalled.
        if self._parked:
            self._woken += 1
            self._parked.pop().notify()
        elif self._threads < self._max_threads:
            try:
                threading.Thread(target=self._work, name=f"{self._name}-{self._started + 1}",
                                 daemon=True).start()
            except RuntimeError as err:  # out of threads (a pids limit): the queue waits for one
                log.warning(f"cannot start a thread for a queued call: {err}",
                            extra={"threads": self._threads, "queued": len(self._queue)})
                return
            self._threads += 1
            self._starting += 1
            self._started += 1

    def _wake_all(self) -> None:  # with the lock held
        while self._parked:
            self._woken += 1
            self._parked.pop().notify()

    def _park(self, parked: threading.Condition, idle_since: float) -> bool:
        """Wait for work (lock held); False when this thread has idled long enough to exit."""
        may_exit = self._threads > self._turns
        idle_left = idle_since + self._idle_seconds - time.monotonic()
        if may_exit and idle_left <= 0 and not self._queue:
            return False
        timeout = self._next_look()
        if may_exit:
            timeout = idle_left if timeout is None else min(timeout, idle_left)
        self._parked.append(parked)
        parked.wait(None if timeout is None else max(timeout, 0.001))
        if parked in self._parked:  # not taken off by a dispatch: the wait timed out
            self._parked.remove(parked)
            self._dispatch()  # a stalled call may have left room
        else:
            self._woken -= 1
        return True

    def _work(self) -> None:
        me = threading.get_ident()
        parked = threading.Condition(self._lock)
        with self._lock:
            self._starting -= 1
            idle_since = time.monotonic()
            try:
                while True:
                    while not (self._queue and self._room() > 0) and not self._closed:
                        if not self._park(parked, idle_since):
                            return
                    if not self._queue:
                        return  # closed, and nothing left to run
                    future, fn, args, kwargs = self._queue.popleft()
                    if not future.set_running_or_notify_cancel():
                        self._call_done()
                        continue
                    self._arriving[me] = time.monotonic()
                    self._dispatch()  # for what is still queued, now that this call is counted
                    self._lock.release()
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as err:  # the future carries it, as ThreadPoolExecutor's do
                        future.set_exception(err)
                    finally:
                        # Not kept alive while this thread idles: the call's request and state.
                        del future, fn, args, kwargs
                        self._lock.acquire()
                        self._arriving.pop(me, None)
                        self._finishing.discard(me)
                        self._call_done()
                        idle_since = time.monotonic()
            finally:
                self._threads -= 1
                self._changed.notify_all()

    @property
    def threads(self) -> int:
        return self._threads


@contextmanager
def waiting() -> Iterator[None]:
    """Around something that blocks for long: the current call gives its turn back first."""
    turn = _TURN.get()
    if turn is not None:
        turn.give_back()
    yield
