"""The periodic check: which socket-file volumes hold a dead socket, and their events.

Every interval, the published socket-file volumes are compared with the live
agent sockets (one open per configured socket, whatever the number of
volumes). A volume whose mount no longer holds the live socket gets one event
on its pod. The key of a report is the volume's target and the dead socket it
holds: the same dead socket is never reported twice, by this process or (the
event's name derives from that key) by a later one.

Events leave through a node-wide token bucket. What the bucket or the API
holds back stays queued for later; an API that is unreachable or refuses is
said once in the log, and again only after it worked in between. None of this
runs on a CSI call's thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from csi_driver.config import Config
from csi_driver.mounts import Identity
from csi_driver.registry import PublishedVolumes
from csi_driver.sources import AgentSources
from csi_driver.stale_events.bucket import TokenBucket
from csi_driver.stale_events.pods import PodRef, PodRefs
from csi_driver.volumes import Kind, sockets
from csi_driver.volumes.library import is_library_family

log = logging.getLogger("csi_driver.stale_events")
REASON = "AgentSocketStale"
# Node-wide: a burst for the pods of one agent restart, then a steady trickle.
BURST = 20
RATE = 2.0  # events per second
_Key = tuple[str, Identity]


@dataclass(frozen=True)
class StaleVolume:
    target_path: str
    pod: PodRef
    volume_name: str  # the pod's name for the volume
    volume_type: str
    host_path: str  # the agent socket it was published from ("" when unknown)
    mounted: Identity  # the dead socket it holds

    @property
    def event_name(self) -> str:
        """Derived from the volume and the dead socket, so reporting it again
        (after a driver restart) finds the first event instead of adding one."""
        key = f"{self.pod.uid}/{self.volume_name}/{self.mounted[0]}:{self.mounted[1]}"
        prefix = self.pod.name[:236].rstrip(".-")
        return f"{prefix}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def message(self, config: Config) -> str:
        directory_type = (sockets.APM_SOCKET_DIRECTORY if self.host_path == config.apm_host_socket_path
                          else sockets.DSD_SOCKET_DIRECTORY)
        socket = self.host_path or "its socket"
        return (f"Volume {self.volume_name!r} ({self.volume_type}) holds a dead Datadog Agent socket: the "
                f"agent re-created {socket} after the volume was mounted, so connections through it "
                f"fail. Restart the pod (delete it or roll out its workload again; restarting its "
                f"containers is not enough), or use the volume type {directory_type}, which follows "
                "agent restarts.")


class PostFailed(Exception):
    def __init__(self, problem: str, retry: bool, kind: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry = retry  # False: this event can never be posted (its namespace is gone, ...)
        # What is said once: the same kind of trouble again (another timeout) is not news.
        self.kind = kind or problem


class Poster(Protocol):
    def post(self, volume: StaleVolume) -> None:
        """Post the event; raises PostFailed."""


class StaleCheck:
    def __init__(self, config: Config, published: PublishedVolumes, sources: AgentSources,
                 pods: PodRefs, new_poster: Callable[[], Poster],
                 bucket: TokenBucket | None = None) -> None:
        self._config = config
        self._published, self._sources, self._pods = published, sources, pods
        self._new_poster = new_poster  # called once there is something to post
        self._poster: Poster | None = None
        self._bucket = bucket or TokenBucket(RATE, BURST)
        self._reported: set[_Key] = set()
        self._pending: dict[_Key, StaleVolume] = {}
        self._trouble = ""  # the kind of trouble last said about the API, until it works again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ one check

    def check(self) -> int:
        """Queue an event for each volume newly found stale; return how many are queued."""
        live: dict[tuple[str, Kind], Identity | None] = {}
        current: set[_Key] = set()
        for target, entry in self._published.snapshot().items():
            source = entry.source
            if source.kind is not Kind.SOCKET or is_library_family(source):
                continue  # directory volumes follow agent restarts
            key = (target, entry.mounted)
            current.add(key)
            if key in self._reported or key in self._pending:
                continue
            where = (source.host_path, source.kind)
            if where not in live:
                live[where] = self._sources.live_identity(source) if source.host_path else None
            if live[where] == entry.mounted:
                continue
            pod = self._pods.get(target)
            if pod is None:
                self._reported.add(key)
                log.info("a socket-file volume holds a dead agent socket, and its pod is not known "
                         "(published before pod events were on); no event for it",
                         extra={"target": target, "type": source.type})
                continue
            self._pending[key] = StaleVolume(target, pod, target.split("/")[-2], source.type,
                                             source.host_path, entry.mounted)
        # Unpublished volumes are forgotten; their targets may come back with other volumes.
        self._reported &= current
        for key in [key for key in self._pending if key not in current]:
            del self._pending[key]
        return len(self._pending)

    def post_pending(self) -> float | None:
        """Post what the bucket allows; return the seconds until more could
        go, or None when nothing will before the next check."""
        while self._pending:
            if not self._bucket.take():
                return self._bucket.wait_time()
            key, volume = next(iter(self._pending.items()))
            try:
                if self._poster is None:
                    self._poster = self._new_poster()
                self._poster.post(volume)
            except PostFailed as failed:
                if failed.retry:
                    self._say_trouble(failed)
                    return None  # retried at the next check, not in a tight loop
                del self._pending[key]
                self._reported.add(key)
                log.warning(f"{REASON} event for pod {volume.pod.namespace}/{volume.pod.name} not "
                            f"posted: {failed.problem}", extra={"target": volume.target_path})
                continue
            del self._pending[key]
            self._reported.add(key)
            self._say_working()
            log.info(f"{REASON} event posted on pod {volume.pod.namespace}/{volume.pod.name}",
                     extra={"target": volume.target_path, "type": volume.volume_type})
        return None

    def _say_trouble(self, failed: PostFailed) -> None:
        if failed.kind != self._trouble:
            self._trouble = failed.kind
            log.warning(f"cannot post {REASON} events: {failed.problem}; the driver keeps serving, and "
                        "retries at each check")

    def _say_working(self) -> None:
        if self._trouble:
            self._trouble = ""
            log.info(f"{REASON} events are posted again")

    # ------------------------------------------------------------ the thread

    def start(self, interval: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(interval,), name="stale-check",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self, interval: float) -> None:
        next_check = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_check:
                self._guarded(self.check)
                next_check = now + interval
            again = self._guarded(self.post_pending)
            pause = next_check - time.monotonic()
            if isinstance(again, float):
                pause = min(pause, again)
            self._stop.wait(max(pause, 0.0))

    def _guarded(self, step: Callable[[], object]) -> object:
        """A bug here must not end the checks (nor ever the driver)."""
        try:
            return step()
        except Exception:
            log.exception("the stale socket check failed")
            return None
