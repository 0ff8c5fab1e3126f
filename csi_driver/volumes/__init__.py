"""Volume families: turn a request's ``volume_context`` into what to mount.

Each family module exposes ``resolve(context, config) -> VolumeSource | None``
(``None``: the context is not for this family). ``resolve`` below asks each in
turn and refuses what none of them claims.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from csi_driver.config import Config
from csi_driver.errors import unsupported
from csi_driver.mounts import Attr


class Kind(enum.Enum):
    SOCKET = "socket"  # a Unix socket file; the target is an empty file
    DIRECTORY = "directory"  # a directory; the target is a directory


@dataclass(frozen=True)
class VolumeSource:
    type: str  # the volume type as users write it; also the metrics ``type`` label
    host_path: str  # what gets bind-mounted
    kind: Kind
    deprecation: str | None = None  # set for deprecated forms: what to use instead
    attrs: Attr = Attr(0)  # mount options, set by the family whatever the request asks


INVALID_TYPE = "invalid"


def type_label(context: Mapping[str, str]) -> str:
    """The metrics ``type`` label of a request that failed before resolving.

    Only values from a closed set: a label taken from what a pod author
    wrote would create a series per distinct value, without bound.
    """
    from csi_driver.volumes import sockets

    volume_type = context.get("type")
    if volume_type is None:
        mode = context.get("mode")
        return mode if mode in sockets.LEGACY_MODES else INVALID_TYPE
    return volume_type if volume_type in sockets.KNOWN_TYPES else INVALID_TYPE


def resolve(context: Mapping[str, str], config: Config) -> VolumeSource:
    from csi_driver.volumes import sockets

    source = sockets.resolve(context, config)
    if source is None:
        raise unsupported(
            "volume_context must set 'type' to one of "
            + ", ".join(sockets.TYPES)
            + " (or the deprecated 'mode' and 'path' pair)"
        )
    return source
