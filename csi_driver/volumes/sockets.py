"""The Datadog Agent's sockets: DogStatsD and APM, as a file or as their directory."""

from __future__ import annotations

import os
from collections.abc import Mapping

from csi_driver.config import MAX_AGENT_SOCKET_WAIT, Config, ConfigError, parse_duration
from csi_driver.errors import invalid, unsupported
from csi_driver.mounts import Attr
from csi_driver.volumes import Kind, VolumeSource, library

APM_SOCKET = "APMSocket"
APM_SOCKET_DIRECTORY = "APMSocketDirectory"
DSD_SOCKET = "DSDSocket"
DSD_SOCKET_DIRECTORY = "DSDSocketDirectory"
DEPRECATED_SOCKETS_DIRECTORY = "DatadogSocketsDirectory"
TYPES = (APM_SOCKET, APM_SOCKET_DIRECTORY, DSD_SOCKET, DSD_SOCKET_DIRECTORY)
LEGACY_MODES = ("socket", "local")
KNOWN_TYPES = frozenset((*TYPES, DEPRECATED_SOCKETS_DIRECTORY))
# A pod only ever connects to the agent's sockets, which works through a
# read-only mount. Read-write would let a pod chmod the node's agent socket or
# replace it with its own to receive other pods' metrics, whatever readOnly
# the pod asked for; so these volumes are always read-only and inert.
MOUNT_ATTRS = Attr.RDONLY | Attr.NOSUID | Attr.NODEV | Attr.NOEXEC
# How long this volume's publish may wait for a missing agent socket (a duration).
WAIT_ATTRIBUTE = "dd.csi.datadog.com/wait-for-agent-socket"


def _source(volume_type: str, host_path: str, kind: Kind, deprecation: str | None = None
            ) -> VolumeSource:
    return VolumeSource(volume_type, host_path, kind, deprecation, MOUNT_ATTRS)


def resolve(context: Mapping[str, str], config: Config) -> VolumeSource | None:
    volume_type = context.get("type")
    if volume_type is not None:
        return _by_type(volume_type, config)
    if "mode" in context or "path" in context:
        return _legacy(context.get("mode", ""), context.get("path", ""), config)
    return None


def _by_type(volume_type: str, config: Config) -> VolumeSource:
    apm, dsd = config.apm_host_socket_path, config.dsd_host_socket_path
    if volume_type == APM_SOCKET:
        return _source(APM_SOCKET, apm, Kind.SOCKET)
    if volume_type == APM_SOCKET_DIRECTORY:
        return _source(APM_SOCKET_DIRECTORY, os.path.dirname(apm), Kind.DIRECTORY)
    if volume_type == DSD_SOCKET:
        return _source(DSD_SOCKET, dsd, Kind.SOCKET)
    if volume_type == DSD_SOCKET_DIRECTORY:
        return _source(DSD_SOCKET_DIRECTORY, os.path.dirname(dsd), Kind.DIRECTORY)
    if volume_type == DEPRECATED_SOCKETS_DIRECTORY:
        return _source(DEPRECATED_SOCKETS_DIRECTORY, os.path.dirname(dsd), Kind.DIRECTORY,
                       deprecation=f"use type: {DSD_SOCKET_DIRECTORY} (or {APM_SOCKET_DIRECTORY})")
    raise unsupported(f"unknown volume type {_show(volume_type)}; supported types: "
                      f"{', '.join((*TYPES, *library.TYPES))}")


def agent_wait(context: Mapping[str, str], source: VolumeSource, config: Config) -> float:
    """Seconds the publish of ``source`` may wait for the agent's socket to appear."""
    raw = context.get(WAIT_ATTRIBUTE)
    if library.is_library_family(source):
        if raw is not None:
            raise invalid(f"{WAIT_ATTRIBUTE} applies to the agent socket volume types only, not to "
                          f"{source.type}")
        return 0.0
    if raw is None:
        return config.wait_for_agent_socket
    try:
        seconds = parse_duration(raw)
    except ConfigError:
        raise invalid(f"{WAIT_ATTRIBUTE} must be a duration such as 30s or 1m, got {_show(raw)}") from None
    if seconds > MAX_AGENT_SOCKET_WAIT:
        raise invalid(f"{WAIT_ATTRIBUTE} must be at most {MAX_AGENT_SOCKET_WAIT:g}s (the kubelet gives "
                      f"up on a call after 120s), got {_show(raw)}")
    return seconds


def _legacy(mode: str, path: str, config: Config) -> VolumeSource:
    """The schema before 'type': mode socket|local plus the exact host path."""
    apm, dsd = config.apm_host_socket_path, config.dsd_host_socket_path
    if mode == "socket":
        allowed = {apm: APM_SOCKET, dsd: DSD_SOCKET}
        kind = Kind.SOCKET
    elif mode == "local":
        allowed = {os.path.dirname(apm): APM_SOCKET_DIRECTORY,
                   os.path.dirname(dsd): DSD_SOCKET_DIRECTORY}
        kind = Kind.DIRECTORY
    else:
        raise invalid(
            f"unknown legacy mode {_show(mode)}; use mode 'socket' or 'local', or better the "
            f"'type' attribute with one of {', '.join(TYPES)}"
        )
    if path not in allowed:
        raise invalid(
            f"path {_show(path)} is not allowed with mode {mode!r}; allowed: "
            f"{', '.join(sorted(allowed))}"
        )
    # The metrics 'type' label of the legacy schema is the mode itself, as in
    # the reference driver, so existing dashboards keep their series.
    return _source(mode, path, kind,
                   deprecation=f"use type: {allowed[path]} instead of mode: {mode} with path")


def _show(value: str, limit: int = 64) -> str:
    """Quote a user value for an error message without echoing megabytes back."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)
