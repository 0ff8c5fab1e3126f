"""NodeGetVolumeStats: usage of the published volume and its health.

A mount pins the inode it was made from. When the agent restarts it re-creates
its socket, and a socket-file volume keeps a dead inode: connections fail
although the path still exists. The directory types re-resolve the socket on
every connect, unless the directory itself is deleted and re-created: then the
pod keeps the old, empty directory. Both are detected the same way (the
identity recorded at publish time != the live source's) and reported as an
abnormal volume condition, as is a mount this driver did not make.
"""

from __future__ import annotations

import os

from csi_driver import mounts, targets
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2
from csi_driver.errors import not_found
from csi_driver.mounts import Identity
from csi_driver.registry import Published, PublishedVolumes
from csi_driver.sources import AgentSources
from csi_driver.volumes import Kind
from csi_driver.volumes.library import is_library_family

_Usage = csi_pb2.VolumeUsage


def stale_message(host_path: str) -> str:
    return (
        f"the Datadog Agent re-created its socket {host_path} after this volume was published, so "
        "the pod holds a dead socket; restart the pod to reconnect, or use the directory volume "
        "types (DSDSocketDirectory, APMSocketDirectory), which always reach the live socket"
    )


def _abnormal(message: str) -> csi_pb2.VolumeCondition:
    return csi_pb2.VolumeCondition(abnormal=True, message=message)


def condition(target_fd: int, known: Published | None, sources: AgentSources,
              config: Config) -> csi_pb2.VolumeCondition:
    mounted = mounts.mounted_identity(target_fd)
    if known is None:
        return _abnormal(
            "this mount was not made by this driver (neither published by it nor found among its "
            "volumes at start-up); unpublish it, or delete the pod, so the kubelet publishes it anew")
    source = known.source
    if known.mounted != mounted:
        return _abnormal(f"something other than {source.host_path or 'the agent socket'} is "
                         "mounted over this volume; delete the pod so the kubelet publishes it anew")
    if is_library_family(source):  # the store's copy, which nothing changes while it is mounted
        return csi_pb2.VolumeCondition(abnormal=False, message=f"{source.host_path} is mounted")
    live = sources.live_identity(source) if source.host_path else None
    if live == mounted:
        what = "agent socket" if source.kind is Kind.SOCKET else "agent socket directory"
        return csi_pb2.VolumeCondition(abnormal=False, message=f"{source.host_path} is the live {what}")
    if source.kind is Kind.SOCKET:
        return _abnormal(stale_message(source.host_path or " or ".join(
            (config.dsd_host_socket_path, config.apm_host_socket_path))))
    if live is None:
        return _abnormal(f"the agent socket directory {source.host_path} no longer exists")
    return _abnormal(
        f"the agent socket directory {source.host_path} was deleted and re-created after this "
        "volume was published, so the pod sees the old, empty directory; restart the pod")


def stats(volume_id: str, target: targets.Target, published: PublishedVolumes,
          sources: AgentSources, config: Config) -> csi_pb2.NodeGetVolumeStatsResponse:
    missing = not_found(f"no volume is published at {target.path}")
    try:
        parent_fd = targets.open_parent(target)
    except Exception:
        raise missing from None
    try:
        try:
            fd = targets.open_leaf(parent_fd, target.leaf)
        except OSError:
            raise missing from None
        try:
            if not mounts.is_mount_root(fd):
                raise missing
            other = published.other_volume_at(target.path, volume_id)
            if other is not None:
                raise not_found(f"volume {volume_id} is not published at {target.path} "
                                f"(volume {other} is)")
            volume_condition = condition(fd, published.lookup(target.path), sources, config)
            fs = os.fstatvfs(fd)
            usage = [
                _Usage(unit=_Usage.BYTES, total=fs.f_blocks * fs.f_frsize,
                       available=fs.f_bavail * fs.f_frsize,
                       used=(fs.f_blocks - fs.f_bfree) * fs.f_frsize),
                _Usage(unit=_Usage.INODES, total=fs.f_files, available=fs.f_favail,
                       used=fs.f_files - fs.f_ffree),
            ]
            return csi_pb2.NodeGetVolumeStatsResponse(usage=usage, volume_condition=volume_condition)
        finally:
            os.close(fd)
    finally:
        os.close(parent_fd)


def count_stale(published: PublishedVolumes, sources: AgentSources) -> int:
    """Published volumes whose mount no longer holds the live agent socket or
    directory (the agent re-created it, or it is gone)."""
    live: dict[tuple[str, Kind], Identity | None] = {}
    stale = 0
    for entry in published.snapshot().values():
        if is_library_family(entry.source):
            continue
        key = (entry.source.host_path, entry.source.kind)
        if key not in live:
            live[key] = sources.live_identity(entry.source) if key[0] else None
        if live[key] != entry.mounted:
            stale += 1
    return stale
