"""Waiting for the agent's socket to appear, for publishes allowed to wait.

On a new node, application pods can start before the agent's DaemonSet has
created its sockets. A tracer that finds no socket at start often never
retries, and a directory volume would mount an empty directory. So a publish
allowed to wait (``--wait-for-agent-socket``, or the volume attribute
``dd.csi.datadog.com/wait-for-agent-socket``) whose agent socket does not exist
yet blocks until it appears, up to its limit, then publishes; past the limit it
answers UNAVAILABLE and the kubelet retries, keeping the pod in
ContainerCreating. A directory volume waits for the socket inside its directory.

Waiting is event-driven. One inotify instance and one thread serve every
waiting call (the kernel allows a user 128 instances by default, shared with
the kubelet and the container runtime): for each path waited for, the thread
keeps a watch on its deepest existing directory, moves it down as the missing
directories appear, and wakes the calls waiting for that path whenever
something changed there. Each call then looks for itself.

The safety rules of ``sources`` hold: the path waited for is the resolved one
(the configured directories resolved at start-up), it is walked from ``/`` one
component at a time without following symlinks, and the watch is placed on the
directory so opened (through ``/proc/self/fd``). Anything but a directory where
a directory is expected (a symlink planted there) ends the wait at once, and
the publish then refuses it as usual.
"""

from __future__ import annotations

import enum
import logging
import os
import select
import threading
import time
from dataclasses import dataclass

import grpc

from csi_driver.admission import waiting
from csi_driver.errors import RequestError
from csi_driver.inotify import (
    IN_CREATE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MOVE_SELF,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Event,
    Inotify,
)
from csi_driver.mounts import fd_path
from csi_driver.sources import AgentSources
from csi_driver.volumes import VolumeSource

log = logging.getLogger(__name__)
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WATCH_MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_RESTART = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED  # the watched directory itself went away


class Found(enum.Enum):
    PRESENT = "present"  # the path exists (whatever it is: opening it decides)
    ABSENT = "absent"  # a component of it does not exist yet
    BLOCKED = "blocked"  # a component is not a directory (or cannot be opened): stop waiting


@dataclass
class _Deepest:
    fd: int  # the deepest existing directory, opened O_PATH without following symlinks
    missing: str  # the name expected to appear in it ("" when the path is there)
    found: Found


def _deepest(path: str) -> _Deepest:
    """Walk ``path`` from ``/`` without following symlinks, as far as it exists."""
    names = [name for name in path.split("/") if name]
    fd = os.open("/", _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        for name in names[:-1]:
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return _Deepest(fd, name, Found.ABSENT)
            except OSError:  # a symlink (ELOOP), a file (ENOTDIR), no permission...
                return _Deepest(fd, name, Found.BLOCKED)
            os.close(fd)
            fd = next_fd
        try:
            os.stat(names[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return _Deepest(fd, names[-1], Found.ABSENT)
        return _Deepest(fd, "", Found.PRESENT)
    except BaseException:
        os.close(fd)
        raise


def probe(path: str) -> Found:
    deepest = _deepest(path)
    os.close(deepest.fd)
    return deepest.found


class _Outcome(enum.Enum):
    SETTLED = "settled"  # present, or blocked: opening it tells which
    TIMED_OUT = "timed out"
    STOPPED = "stopped"


@dataclass
class _Watched:
    """One path some calls wait for, and the watch kept for it."""

    waiters: int = 0
    wd: int | None = None
    missing: str = ""  # the name whose appearance matters in the watched directory
    changes: int = 0  # bumped whenever the watch was (re)placed: waiting calls look again
    error: OSError | None = None  # the watch could not be placed


def unavailable(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.UNAVAILABLE, message)


class AgentWait:
    """Lets publishes wait for the agent's socket; ``stop`` ends every wait at once."""

    def __init__(self, sources: AgentSources) -> None:
        self._sources = sources
        self._cond = threading.Condition()
        self._paths: dict[str, _Watched] = {}
        self._users: dict[int, set[str]] = {}  # watch descriptor -> the paths using it
        self._stopping = False
        self._inotify: Inotify | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None

    def until_present(self, source: VolumeSource, seconds: float) -> None:
        """Return once the socket ``source`` needs exists (at once if it does);
        UNAVAILABLE after ``seconds`` or when the driver stops."""
        shown, path = self._sources.awaited_socket(source)
        if probe(path) is not Found.ABSENT:
            return
        log.info("waiting for the agent's socket", extra={
            "socket": shown, "type": source.type, "wait_seconds": seconds})
        with waiting():  # other calls take this call's turn meanwhile
            outcome = self._wait(path, seconds)
        if outcome is _Outcome.TIMED_OUT:
            raise unavailable(
                f"waited {seconds:g}s for the Datadog Agent's socket {shown} to appear on this node, "
                "and it did not; check that the agent runs on this node with this socket enabled "
                "(the kubelet retries this volume)")
        if outcome is _Outcome.STOPPED:
            raise unavailable(f"the driver is stopping while waiting for the Datadog Agent's socket "
                              f"{shown}; the kubelet retries once it is back")

    def _wait(self, path: str, seconds: float) -> _Outcome:
        deadline = time.monotonic() + seconds
        with self._cond:
            if self._stopping:
                return _Outcome.STOPPED
            try:
                self._start_thread()
            except OSError as err:
                raise unavailable(f"cannot watch for the Datadog Agent's socket {path}: {err.strerror} "
                                  "(inotify: see fs.inotify.max_user_instances and "
                                  "max_user_watches)") from None
            watched = self._paths.setdefault(path, _Watched())
            watched.waiters += 1
        self._wake()
        try:
            return self._wait_registered(path, watched, deadline)
        finally:
            with self._cond:
                watched.waiters -= 1
                if watched.waiters == 0:
                    del self._paths[path]
                    self._drop_watch(path, watched)

    def _wait_registered(self, path: str, watched: _Watched, deadline: float) -> _Outcome:
        seen = -1
        while True:
            with self._cond:
                # Until the watch is in place, and then until it fires again.
                while not self._stopping and watched.error is None and (
                        watched.wd is None or watched.changes == seen):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return _Outcome.TIMED_OUT
                    self._cond.wait(left)
                if self._stopping:
                    return _Outcome.STOPPED
                if watched.error is not None:
                    raise unavailable(f"cannot watch for the Datadog Agent's socket {path}: "
                                      f"{watched.error.strerror}")
                seen = watched.changes
            # Looked at after the watch was placed: what appears later fires it.
            if probe(path) is not Found.ABSENT:
                return _Outcome.SETTLED

    def stop(self) -> None:
        """End every wait now (their calls answer UNAVAILABLE) and release the watches."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return
        self._wake()
        thread.join(5)
        if not thread.is_alive():
            self._close()

    # -------------------------------------------------------- the thread

    def _start_thread(self) -> None:
        if self._thread is not None:
            return
        inotify = Inotify()
        try:
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            inotify.close()
            raise
        self._inotify = inotify
        self._thread = threading.Thread(target=self._run, name="agent-wait", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        with self._cond:  # never a descriptor ``_close`` closed (and the kernel reused)
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # a full pipe wakes the thread all the same

    def _run(self) -> None:
        assert self._inotify is not None
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            poller.poll()
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
            with self._cond:
                if self._stopping:
                    return
                self._handle(self._inotify.read())
                self._cond.notify_all()

    def _handle(self, events: list[Event]) -> None:
        """(Re)place the watches the events concern and those not placed yet."""
        again = {path for path, watched in self._paths.items() if watched.wd is None}
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                again.update(self._paths)
                continue
            for path in self._users.get(event.wd, ()):
                watched = self._paths.get(path)
                if watched is not None and (event.mask & _RESTART or event.name == watched.missing):
                    again.add(path)
            if event.mask & IN_IGNORED:
                self._forget_wd(event.wd)
        for path in again:
            self._place(path, self._paths[path])

    def _place(self, path: str, watched: _Watched) -> None:
        """Watch the deepest existing directory of ``path``: checked again after
        the watch is added, so a directory created meanwhile is descended into."""
        assert self._inotify is not None
        while True:
            deepest = _deepest(path)
            try:
                try:
                    wd = self._inotify.add_watch(fd_path(deepest.fd), _WATCH_MASK)
                except OSError as err:
                    self._drop_watch(path, watched)
                    watched.error = err
                    return
                again = _deepest(path)
                try:
                    same = os.path.samestat(os.fstat(again.fd), os.fstat(deepest.fd))
                finally:
                    os.close(again.fd)
            finally:
                os.close(deepest.fd)
            if watched.wd != wd:
                self._drop_watch(path, watched)
                self._users.setdefault(wd, set()).add(path)
            watched.wd, watched.missing = wd, deepest.missing
            if same:
                watched.changes += 1
                return

    def _drop_watch(self, path: str, watched: _Watched) -> None:
        if watched.wd is None:
            return
        users = self._users.get(watched.wd)
        if users is not None:
            users.discard(path)
            if not users:
                del self._users[watched.wd]
                if self._inotify is not None:
                    self._inotify.remove_watch(watched.wd)
        watched.wd = None

    def _forget_wd(self, wd: int) -> None:
        """The kernel dropped this watch (its directory is gone); those using it place theirs again."""
        for path in self._users.pop(wd, ()):
            watched = self._paths.get(path)
            if watched is not None and watched.wd == wd:
                watched.wd = None

    def _close(self) -> None:
        with self._cond:
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
