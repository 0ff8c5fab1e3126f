"""Pod events for socket-file volumes that an agent restart left dead.

A socket-file volume (``APMSocket``, ``DSDSocket``) pins the agent's socket
inode; when the agent restarts and re-creates its socket, the pod keeps the
dead one until it restarts. ``NodeGetVolumeStats`` already says so to whoever
asks; this package says it where users look: a ``Warning`` event
``AgentSocketStale`` on the pod, once per volume and dead socket, naming the
volume and the fix.

``start`` decides whether the feature runs (``--stale-check-interval`` above
0 and an API to post to) and returns what the CSI calls tell about the volumes
they publish and unpublish; the check itself runs on its own thread
(``check``), the API client is loaded only when an event is due (``kube``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from csi_driver.config import Config
from csi_driver.registry import PublishedVolumes
from csi_driver.sources import AgentSources
from csi_driver.validation import Publish
from csi_driver.volumes import Kind
from csi_driver.volumes.library import is_library_family

if TYPE_CHECKING:
    from csi_driver.stale_events.check import Poster

log = logging.getLogger(__name__)


class StaleEvents:
    """The feature when it is off: calls tell it nothing it keeps."""

    def remember(self, req: Publish, context: Mapping[str, str]) -> None:
        """``req`` was published (or found published already)."""

    def forget(self, target_path: str) -> None:
        """Nothing is published at ``target_path`` any more."""

    def stop(self) -> None:
        pass


class Watching(StaleEvents):
    """The feature when it is on; ``new_poster`` makes what posts the events
    (by default through the Kubernetes API), once the first one is due."""

    def __init__(self, config: Config, published: PublishedVolumes, sources: AgentSources,
                 new_poster: Callable[[], Poster] | None = None) -> None:
        from csi_driver.stale_events.check import StaleCheck
        from csi_driver.stale_events.pods import DIRECTORY, PodRefs

        self._pods = PodRefs(os.path.join(config.storage_path, DIRECTORY))
        adopted = self._pods.load(published.snapshot())
        self.check = StaleCheck(config, published, sources, self._pods,
                                new_poster or (lambda: _kube_events(config)))
        self.check.start(config.stale_check_interval)
        log.info("AgentSocketStale pod events are on", extra={
            "check_interval_seconds": config.stale_check_interval, "known_pods": adopted})

    def remember(self, req: Publish, context: Mapping[str, str]) -> None:
        if req.source.kind is not Kind.SOCKET or is_library_family(req.source):
            return  # only socket files hold a socket that can die under the pod
        from csi_driver.stale_events.pods import from_context

        pod = from_context(context)
        if pod is not None:
            self._pods.remember(req.target.path, pod)

    def forget(self, target_path: str) -> None:
        self._pods.forget(target_path)

    def stop(self) -> None:
        self.check.stop()


def _kube_events(config: Config) -> Poster:
    from csi_driver.stale_events.kube import KubeEvents

    return KubeEvents(config)


def start(config: Config, published: PublishedVolumes, sources: AgentSources) -> StaleEvents:
    """The running feature, or the one that does nothing (saying why once)."""
    if config.stale_check_interval <= 0:
        return StaleEvents()
    from csi_driver.stale_events.kube import api_access

    problem = api_access(config)
    if problem is not None:
        log.info(f"AgentSocketStale pod events are off: {problem}")
        return StaleEvents()
    return Watching(config, published, sources)
