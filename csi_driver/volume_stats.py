"""NodeGetVolumeStats: usage of the published volume and its health.

A socket-file volume pins the inode of the socket it was published with. When
the agent restarts it re-creates its socket, and the pod keeps a dead inode:
connections fail although the path still exists. This module detects exactly
that (target inode != live socket inode) and reports it as an abnormal volume
condition; the directory types re-resolve the socket on every connect and
cannot go stale.
"""

from __future__ import annotations

import os
import stat

from csi_driver import mounts, targets
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2
from csi_driver.errors import not_found
from csi_driver.publisher import Publisher
from csi_driver.volumes import Kind

_Usage = csi_pb2.VolumeUsage


def stale_message(host_path: str) -> str:
    return (
        f"the Datadog Agent re-created its socket {host_path} after this volume was published, so "
        "the pod holds a dead socket; restart the pod to reconnect, or use the directory volume "
        "types (DSDSocketDirectory, APMSocketDirectory), which always reach the live socket"
    )


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _live(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def condition(target_fd: int, source_path: str | None, kind: Kind, config: Config
              ) -> csi_pb2.VolumeCondition:
    mounted = os.fstat(target_fd)
    if kind is Kind.DIRECTORY:
        live = _live(source_path) if source_path else None
        if source_path and live is None:
            return csi_pb2.VolumeCondition(
                abnormal=True, message=f"the agent socket directory {source_path} no longer exists")
        return csi_pb2.VolumeCondition(abnormal=False, message="socket directory is published")
    candidates = [source_path] if source_path else [
        config.dsd_host_socket_path, config.apm_host_socket_path]
    for path in candidates:
        live = _live(path)
        if live is not None and stat.S_ISSOCK(live.st_mode) and _same_inode(live, mounted):
            return csi_pb2.VolumeCondition(abnormal=False, message=f"{path} is the live agent socket")
    return csi_pb2.VolumeCondition(abnormal=True, message=stale_message(
        source_path or " or ".join(candidates)))


def stats(volume_id: str, target: targets.Target, publisher: Publisher, config: Config
          ) -> csi_pb2.NodeGetVolumeStatsResponse:
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
            if not mounts.mount_state(fd).is_mount_root:
                raise missing
            st = os.fstat(fd)
            known = publisher.lookup(target.path)
            if known is not None and known.volume_id and known.volume_id != volume_id:
                raise not_found(f"volume {volume_id} is not published at {target.path} "
                                f"(volume {known.volume_id} is)")
            kind = known.source.kind if known else (
                Kind.DIRECTORY if stat.S_ISDIR(st.st_mode) else Kind.SOCKET)
            source_path = known.source.host_path if known else None
            volume_condition = condition(fd, source_path, kind, config)
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


def count_stale(publisher: Publisher) -> int:
    """Published socket-file volumes whose target no longer holds the live socket."""
    stale = 0
    for target_path, entry in publisher.published().items():
        if entry.source.kind is not Kind.SOCKET:
            continue
        try:
            mounted = os.stat(target_path, follow_symlinks=False)
        except OSError:
            continue
        live = _live(entry.source.host_path)
        if live is None or not _same_inode(live, mounted):
            stale += 1
    return stale
