"""The library volume family as the publisher sees it, and its start-up.

``start`` checks the storage directory once. When it is missing or not
writable, the family is disabled with one log line saying why, socket volumes
are served as usual, and every library request is refused with
FAILED_PRECONDITION naming the path (``Libraries``, the family that serves
nothing). Otherwise it opens the store and the links database, writes the
preload file, and returns the working ``LibraryCache``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import tempfile
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from csi_driver.config import Config
from csi_driver.errors import precondition
from csi_driver.library.metrics import LibraryMetrics
from csi_driver.mounts import Identity
from csi_driver.registry import Published
from csi_driver.sources import OpenSource
from csi_driver.volumes import VolumeSource

log = logging.getLogger(__name__)


class Libraries:
    """The family when this node cannot serve it: requests are refused with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def open(self, source: VolumeSource) -> OpenSource:
        """The source opened for mounting (pinned until closed); RequestError if it cannot be."""
        raise precondition(self.reason)

    def holding(self, volume_id: str, target_path: str, mounted: Identity,
                source: VolumeSource) -> VolumeSource | None:
        """What ``target_path`` holds for this volume when ``mounted`` is it (a
        republish), else None."""
        return None

    def released(self, volume_id: str, target_path: str) -> None:
        """``target_path`` was unpublished: forget what it used."""

    def source_of(self, mounted: os.stat_result) -> VolumeSource | None:
        """At start-up: the family's source a mount of ``mounted`` was made from."""
        return None

    def reconcile(self, published: Mapping[str, Published]) -> None:
        """At start-up, after recovery: bring the links in line with the mounts."""

    def abort_pulls(self) -> None:
        """The driver is stopping: fail every download in progress and every later one,
        so that no call keeps shutdown waiting on a registry."""

    def close(self) -> None:
        pass


def start(config: Config, registry: CollectorRegistry) -> Libraries:
    """The working family, or one that refuses every request, saying why."""
    metrics = LibraryMetrics(registry, config.registry_allow_list)
    if not config.apm_enabled:
        return Libraries("single-step instrumentation volumes are disabled on this node "
                         "(--apm-enabled=false)")
    problem = storage_problem(config.storage_path)
    if problem is None:
        try:
            return _start_cache(config, metrics)
        except (OSError, sqlite3.Error) as err:
            problem = f"the library cache under {config.storage_path} cannot be opened: {err}"
    log.warning(f"DatadogLibrary and DatadogInjectorPreload volumes are disabled: {problem}; "
                "socket volumes are served as usual", extra={"storage_path": config.storage_path})
    return Libraries(f"DatadogLibrary and DatadogInjectorPreload volumes are disabled on this node: "
                     f"{problem} (fix --storage-path, then restart the driver)")


def storage_problem(path: str) -> str | None:
    """Why ``path`` cannot hold the library cache, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"the storage path {path} does not exist"
    except OSError as err:
        return f"the storage path {path} cannot be reached ({os.strerror(err.errno or 0)})"
    if not stat.S_ISDIR(st.st_mode):
        return f"the storage path {path} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
    except OSError as err:
        return f"the storage path {path} is not writable ({os.strerror(err.errno or 0)})"
    os.close(fd)
    os.unlink(probe)
    return None


def _start_cache(config: Config, metrics: LibraryMetrics) -> Libraries:
    from csi_driver.library import preload
    from csi_driver.library.cache import LibraryCache
    from csi_driver.library.links import DATABASE, LinksDatabase
    from csi_driver.library.store import Store
    from csi_driver.oci.auth import Credentials
    from csi_driver.oci.registry import RegistryClient
    from csi_driver.volumes.library import preload_path

    store = Store(config.storage_path)
    preload.ensure(preload_path(config))
    db = LinksDatabase(os.path.join(config.storage_path, DATABASE))
    credentials = Credentials.from_environ(os.environ)
    cache = LibraryCache(config, store, db, RegistryClient(credentials), metrics, preload_path(config))
    try:
        cache.start()
    except BaseException:
        db.close()
        raise
    log.info("library cache ready", extra={
        "storage_path": config.storage_path, "libraries": len(db.libraries()),
        "volume_links": len(db.links()), "registries_with_credentials": list(credentials.registries),
        "cleanup_delay_seconds": config.library_cleanup_delay})
    return cache
