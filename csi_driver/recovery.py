"""Start-up recovery: adopt the volumes an earlier driver process published.

What this driver has published lives in memory (``PublishedVolumes``). After a
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
- a deleted directory matching none is adopted as a stale directory volume
  when the kubelet's ``vol_data.json`` names this driver and the directory's
  name is one of the configured ones;
- any other directory is another driver's volume and left alone, as is any
  volume whose ``vol_data.json`` names another driver;
- a library volume (a stored library's content directory, the preload file) is
  recognised by inode too, when a library family is passed in.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from typing import Any

from csi_driver import mounts, targets
from csi_driver.config import Config
from csi_driver.errors import RequestError
from csi_driver.library.family import Libraries
from csi_driver.mounts import Identity, identity
from csi_driver.registry import Published, PublishedVolumes
from csi_driver.sources import AgentSources
from csi_driver.volumes import Kind, VolumeSource, sockets

log = logging.getLogger(__name__)
MOUNTINFO = mounts.MOUNTINFO
UNKNOWN_TYPE = "unknown"
_DELETED = "//deleted"
VOLUME_DATA = "vol_data.json"
MAX_VOLUME_DATA_BYTES = 16 * 1024  # the kubelet writes a few hundred bytes


def mount_points_under(directory: str, mountinfo: str = MOUNTINFO) -> dict[str, str]:
    """Mount point -> mount root (the source path inside its filesystem)."""
    prefix = directory.rstrip("/") + "/"
    found: dict[str, str] = {}
    for entry in mounts.mount_table(mountinfo):
        if entry.mount_point.startswith(prefix):
            found[entry.mount_point] = entry.root
    return found


def _known_sources(config: Config, agent: AgentSources) -> list[tuple[VolumeSource, Identity]]:
    found = []
    for volume_type in (sockets.DSD_SOCKET, sockets.APM_SOCKET,
                        sockets.DSD_SOCKET_DIRECTORY, sockets.APM_SOCKET_DIRECTORY):
        source = sockets.resolve({"type": volume_type}, config)
        assert source is not None
        live = agent.live_identity(source)
        if live is not None:  # not there now: nothing mounted can match it by inode
            found.append((source, live))
    return found


def read_volume_data(volume_dir_fd: int) -> dict[str, Any]:
    """The kubelet's ``vol_data.json`` beside the target, or {} when unusable.

    It lives in a directory the pod's volume plugin shares, so it is read as
    untrusted: never through a symlink, never from a FIFO or device (which
    would hang or never end start-up), and never more than a few KB.
    """
    try:
        # Looked at before it is opened for reading: opening a device can act.
        path_fd = os.open(VOLUME_DATA, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=volume_dir_fd)
    except OSError:
        return {}
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_VOLUME_DATA_BYTES:
            return {}
        fd = os.open(mounts.fd_path(path_fd),
                     os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, MAX_VOLUME_DATA_BYTES + 1)
        finally:
            os.close(fd)
    except OSError:
        return {}
    finally:
        os.close(path_fd)
    if len(raw) > MAX_VOLUME_DATA_BYTES:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _stale_source(mount_root: str, mounted: os.stat_result, config: Config,
                  agent: AgentSources) -> VolumeSource | None:
    """The configured source a mount of a since-deleted inode was made from,
    by the file name the mount table still records (``<path>//deleted``)."""
    name = os.path.basename(mount_root.removesuffix(_DELETED))
    if stat.S_ISSOCK(mounted.st_mode):
        candidates = ((sockets.DSD_SOCKET, config.dsd_host_socket_path),
                      (sockets.APM_SOCKET, config.apm_host_socket_path))
        fallback: VolumeSource | None = VolumeSource(UNKNOWN_TYPE, "", Kind.SOCKET)
    elif stat.S_ISDIR(mounted.st_mode) and mount_root.endswith(_DELETED):
        candidates = ((sockets.DSD_SOCKET_DIRECTORY, config.dsd_host_socket_path),
                      (sockets.APM_SOCKET_DIRECTORY, config.apm_host_socket_path))
        fallback = None
    else:
        return None
    for volume_type, socket_path in candidates:
        source = sockets.resolve({"type": volume_type}, config)
        assert source is not None
        resolved = (socket_path if source.kind is Kind.SOCKET
                    else agent.resolved(os.path.dirname(socket_path)))
        if name == os.path.basename(resolved) or name == os.path.basename(source.host_path):
            return source
    return fallback


def _source_of(mounted: os.stat_result, mount_root: str, config: Config, agent: AgentSources,
               known: list[tuple[VolumeSource, Identity]]) -> VolumeSource | None:
    for source, live in known:
        if live == identity(mounted):
            return source
    return _stale_source(mount_root, mounted, config, agent)


def recover(config: Config, published: PublishedVolumes, sources: AgentSources,
            mountinfo: str = MOUNTINFO, libraries: Libraries | None = None) -> list[Published]:
    """Adopt this driver's mounts under the pods directory; return what was adopted.

    ``libraries`` recognises the library family's mounts (a stored library's
    content directory, the preload file) by inode, as sockets are recognised."""
    known = _known_sources(config, sources)
    adopted = []
    for path, mount_root in sorted(mount_points_under(config.pods_dir, mountinfo).items()):
        try:
            target = targets.parse(path, config.pods_dir)
        except RequestError:
            continue  # not a CSI volume target (secrets, projected volumes, ...)
        inspected = _inspect(target)
        if inspected is None:
            continue
        data, mounted = inspected
        driver_name = data.get("driverName")
        if driver_name not in (None, config.driver_name):
            continue
        if driver_name is None and mount_root.endswith(_DELETED) and stat.S_ISDIR(mounted.st_mode):
            continue  # a deleted directory is only claimed when the kubelet's record says ours
        source = _source_of(mounted, mount_root, config, sources, known)
        if source is None and libraries is not None:
            source = libraries.source_of(mounted)
        if source is None:
            continue
        entry = Published(str(data.get("volumeHandle", "")), source, identity(mounted))
        published.record(path, entry)
        adopted.append(entry)
    return adopted


def _inspect(target: targets.Target) -> tuple[dict[str, Any], os.stat_result] | None:
    """The kubelet's record and the mounted inode, without following symlinks."""
    try:
        parent_fd = targets.open_parent(target)
    except (RequestError, OSError):
        return None
    try:
        data = read_volume_data(parent_fd)
        fd = targets.open_leaf(parent_fd, target.leaf)
        try:
            return data, os.fstat(fd)
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        os.close(parent_fd)
