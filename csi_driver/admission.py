"""How many calls run handler code at once, and letting go of that turn to wait.

A call is mostly Python, which holds the GIL: a few calls at a time let one's
syscalls overlap another's Python, and more only add threads fighting over the
GIL. But some calls wait on something slow: a library download, the agent's
socket to appear, or another call for the same volume doing either. Such a
call must not keep the turn the other calls need. ``Slots`` admits a few
calls at a time; inside a call, ``waiting()`` gives the call's turn back for
good before it blocks (the rest of it runs unthrottled, so nothing can
deadlock by waiting to get a turn back), and the worker pool has threads to
spare for the calls that wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class _Turn:
    __slots__ = ("slots", "held")

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self.slots, self.held = slots, True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()


_TURN: ContextVar[_Turn | None] = ContextVar("csi_admission_turn", default=None)


class Slots:
    def __init__(self, count: int) -> None:
        self._slots = threading.BoundedSemaphore(count)

    def run(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``call`` once a turn is free; the turn is held until it returns or waits."""
        self._slots.acquire()
        turn = _Turn(self._slots)
        token = _TURN.set(turn)
        try:
            return call(*args, **kwargs)
        finally:
            _TURN.reset(token)
            turn.give_back()


@contextmanager
def waiting() -> Iterator[None]:
    """Around something that blocks for long: the current call gives its turn back first."""
    turn = _TURN.get()
    if turn is not None:
        turn.give_back()
    yield
