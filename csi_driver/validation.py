"""Validation of CSI requests into typed values, before anything touches disk.

Codes follow the CSI spec: a missing or malformed field is INVALID_ARGUMENT.
Size limits follow the spec's general limits (128 bytes for an id, 4 KiB for
a map), so a hostile request is refused before it costs anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from csi_driver import targets
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2
from csi_driver.errors import invalid
from csi_driver.volumes import VolumeSource, resolve, sockets

MAX_ID_BYTES = 128
MAX_MAP_BYTES = 4096
_Mode = csi_pb2.VolumeCapability.AccessMode
_READ_ONLY_MODES = {_Mode.SINGLE_NODE_READER_ONLY, _Mode.MULTI_NODE_READER_ONLY}


@dataclass(frozen=True)
class Publish:
    volume_id: str
    target: targets.Target
    source: VolumeSource
    readonly: bool
    wait_for_agent: float = 0.0  # seconds the agent's socket may take to appear


@dataclass(frozen=True)
class Unpublish:
    volume_id: str
    target: targets.Target


def volume_id(value: str) -> str:
    if not value:
        raise invalid("volume_id is required")
    if "\0" in value:
        raise invalid("volume_id contains a NUL byte")
    if len(value.encode()) > MAX_ID_BYTES:
        raise invalid(f"volume_id is longer than {MAX_ID_BYTES} bytes")
    return value


def _check_map(name: str, values: Mapping[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > MAX_MAP_BYTES:
        raise invalid(f"{name} is {size} bytes; the CSI limit is {MAX_MAP_BYTES} bytes")


def publish(request: csi_pb2.NodePublishVolumeRequest, config: Config) -> Publish:
    vid = volume_id(request.volume_id)
    target = targets.parse(request.target_path, config.pods_dir)
    if not request.HasField("volume_capability"):
        raise invalid("volume_capability is required")
    capability = request.volume_capability
    access_type = capability.WhichOneof("access_type")
    if access_type == "block":
        raise invalid("block access is not supported: this driver publishes sockets as mount volumes")
    if access_type != "mount":
        raise invalid("volume_capability must set access_type 'mount'")
    if not capability.HasField("access_mode") or capability.access_mode.mode == _Mode.UNKNOWN:
        raise invalid("volume_capability.access_mode is required")
    if capability.mount.mount_flags:
        raise invalid("mount_flags are not supported for socket volumes")
    if request.staging_target_path:
        raise invalid("staging_target_path must be empty: this driver has no staging step")
    _check_map("volume_context", request.volume_context)
    _check_map("publish_context", request.publish_context)
    source = resolve(request.volume_context, config)
    readonly = request.readonly or capability.access_mode.mode in _READ_ONLY_MODES
    if source.requires_readonly and not readonly:
        raise invalid(f"volume type {source.type} is served read-only only: set readOnly: true on "
                      "the pod's csi volume")
    return Publish(vid, target, source, readonly, sockets.agent_wait(request.volume_context, source, config))


def unpublish(request: csi_pb2.NodeUnpublishVolumeRequest, config: Config) -> Unpublish:
    vid = volume_id(request.volume_id)
    return Unpublish(vid, targets.parse(request.target_path, config.pods_dir))
