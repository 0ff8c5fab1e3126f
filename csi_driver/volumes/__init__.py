"""Volume families: turn a request's ``volume_context`` into what to mount.

Each family module exposes ``resolve(context, config) -> VolumeSource | None``
(``None``: the context is not for this family). ``resolve`` below asks each in
turn and refuses what none of them claims.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

from csi_driver.config import Config
from csi_driver.errors import unsupported


class Kind(enum.Enum):
    SOCKET = "socket"  # a Unix socket file; the target is an empty file
    DIRECTORY = "directory"  # a directory; the target is a directory


@dataclass(frozen=True)
class VolumeSource:
    type: str  # the volume type as users write it; also the metrics ``type`` label
    host_path: str  # what gets bind-mounted
    kind: Kind
    deprecation: str | None = None  # set for deprecated forms: what to use instead


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
