"""The volumes this driver process has published, by target path.

Kept in memory: after a restart, ``recovery`` refills it from the mount table
before the first call. Everything that asks "what is published where" (the
publish procedure, volume stats, the metrics) reads it here.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from csi_driver.mounts import Identity
from csi_driver.volumes import VolumeSource


@dataclass(frozen=True)
class Published:
    volume_id: str  # "" when adopted without the kubelet's record of it
    source: VolumeSource
    # What the mount pins: the source's identity when it was mounted. The
    # agent re-creating its socket or directory changes the live identity,
    # not this one; something mounted over the target changes what the
    # target shows, not this one.
    mounted: Identity


class PublishedVolumes:
    def __init__(self) -> None:
        self._by_target: dict[str, Published] = {}
        self._lock = threading.Lock()

    def record(self, target_path: str, entry: Published) -> None:
        with self._lock:
            self._by_target[target_path] = entry

    def forget(self, target_path: str) -> None:
        with self._lock:
            self._by_target.pop(target_path, None)

    def lookup(self, target_path: str) -> Published | None:
        with self._lock:
            return self._by_target.get(target_path)

    def snapshot(self) -> dict[str, Published]:
        with self._lock:
            return dict(self._by_target)

    def counts_by_type(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(entry.source.type for entry in self._by_target.values()))

    def other_volume_at(self, target_path: str, volume_id: str) -> str | None:
        """The id of a different volume recorded at ``target_path``, if there is one."""
        known = self.lookup(target_path)
        if known is not None and known.volume_id and known.volume_id != volume_id:
            return known.volume_id
        return None
