"""Start-up recovery: adopt the volumes an earlier driver process published.

What this driver has published lives in memory (``Publisher``). After a
restart or a crash that record is empty while the mounts stay in place, so a
socket-file volume gone stale (the agent re-created its socket) would not be
counted, and a republish could not tell a stale mount of ours from a foreign
one. Before serving, the mount table is read once and every mount point that
follows the pod volume layout is adopted:

- its source is found by inode among the configured sockets and their
  directories;
- a socket matching none was published before the agent re-created its socket:
  it is adopted as a stale socket-file volume, attributed by the socket's file
  name as the mount table still records it (``<path>//deleted``);
- a directory matching none is another driver's volume and left alone, as is
  any volume whose ``vol_data.json`` (written by the kubelet) names another
  driver.
"""

from __future__ import annotations

import json
import logging
import os
import stat

from csi_driver import mounts, targets
from csi_driver.config import Config
from csi_driver.errors import RequestError
from csi_driver.publisher import Published, Publisher
from csi_driver.volumes import Kind, VolumeSource, sockets

log = logging.getLogger(__name__)
MOUNTINFO = mounts.MOUNTINFO
UNKNOWN_TYPE = "unknown"
_DELETED = "//deleted"


def mount_points_under(directory: str, mountinfo: str = MOUNTINFO) -> dict[str, str]:
    """Mount point -> mount root (the source path inside its filesystem)."""
    prefix = directory.rstrip("/") + "/"
    found: dict[str, str] = {}
    for root, mount_point in mounts.mount_table(mountinfo):
        if mount_point.startswith(prefix):
            found[mount_point] = root
    return found


def _known_sources(config: Config) -> list[tuple[VolumeSource, os.stat_result]]:
    found = []
    for volume_type in (sockets.DSD_SOCKET, sockets.APM_SOCKET,
                        sockets.DSD_SOCKET_DIRECTORY, sockets.APM_SOCKET_DIRECTORY):
        source = sockets.resolve({"type": volume_type}, config)
        try:
            found.append((source, os.stat(source.host_path)))
        except OSError:
            continue  # not there now: nothing mounted can match it by inode
    return found


def _volume_data(target: targets.Target) -> dict:
    volume_dir = os.path.join(target.pods_dir, *target.components[:-1])
    try:
        with open(os.path.join(volume_dir, "vol_data.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stale_socket_source(mount_root: str, config: Config) -> VolumeSource:
    name = os.path.basename(mount_root.removesuffix(_DELETED))
    for volume_type, path in ((sockets.DSD_SOCKET, config.dsd_host_socket_path),
                              (sockets.APM_SOCKET, config.apm_host_socket_path)):
        if name == os.path.basename(path):
            return VolumeSource(volume_type, path, Kind.SOCKET)
    return VolumeSource(UNKNOWN_TYPE, "", Kind.SOCKET)


def _source_of(mounted: os.stat_result, mount_root: str, config: Config,
               known: list[tuple[VolumeSource, os.stat_result]]) -> VolumeSource | None:
    for source, live in known:
        if (live.st_dev, live.st_ino) == (mounted.st_dev, mounted.st_ino):
            return source
    if stat.S_ISSOCK(mounted.st_mode):
        return _stale_socket_source(mount_root, config)
    return None


def _inspect(target: targets.Target) -> tuple[os.stat_result, bool] | None:
    """The mounted inode and whether it is read-only, without following symlinks."""
    try:
        parent_fd = targets.open_parent(target)
    except (RequestError, OSError):
        return None
    try:
        fd = targets.open_leaf(parent_fd, target.leaf)
        try:
            return os.fstat(fd), bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        os.close(parent_fd)


def recover(config: Config, publisher: Publisher, mountinfo: str = MOUNTINFO) -> list[Published]:
    """Adopt this driver's mounts under the pods directory; return what was adopted."""
    known = _known_sources(config)
    adopted = []
    for path, mount_root in sorted(mount_points_under(config.pods_dir, mountinfo).items()):
        try:
            target = targets.parse(path, config.pods_dir)
        except RequestError:
            continue  # not a CSI volume target (secrets, projected volumes, ...)
        data = _volume_data(target)
        if data.get("driverName", config.driver_name) != config.driver_name:
            continue
        inspected = _inspect(target)
        if inspected is None:
            continue
        mounted, readonly = inspected
        source = _source_of(mounted, mount_root, config, known)
        if source is None:
            continue
        entry = Published(str(data.get("volumeHandle", "")), source, readonly)
        publisher.adopt(path, entry)
        adopted.append(entry)
    return adopted
