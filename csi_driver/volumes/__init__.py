"""Volume families: turn a request's ``volume_context`` into what to mount.

Each family module exposes ``resolve(context, config) -> VolumeSource | None``
(``None``: the context is not for this family). ``resolve`` below asks each in
turn and refuses what none of them claims. Two families: ``sockets`` (the
agent's sockets and their directories) and ``library`` (single-step
instrumentation: library images and the injector's preload file).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from csi_driver.config import Config
from csi_driver.errors import unsupported
from csi_driver.mounts import Attr

if TYPE_CHECKING:
    from csi_driver.volumes.library import LibraryImage


class Kind(enum.Enum):
    SOCKET = "socket"  # a Unix socket file; the target is an empty file
    DIRECTORY = "directory"  # a directory; the target is a directory
    FILE = "file"  # a regular file; the target is an empty file


@dataclass(frozen=True)
class VolumeSource:
    type: str  # the volume type as users write it; also the metrics ``type`` label
    host_path: str  # what gets bind-mounted
    kind: Kind
    deprecation: str | None = None  # set for deprecated forms: what to use instead
    attrs: Attr = Attr(0)  # mount options, set by the family whatever the request asks
    requires_readonly: bool = False  # refused unless the request is read-only
    image: LibraryImage | None = None  # the library to mount (DatadogLibrary only)


INVALID_TYPE = "invalid"


def type_label(context: Mapping[str, str]) -> str:
    """The metrics ``type`` label of a request that failed before resolving.

    Only values from a closed set: a label taken from what a pod author
    wrote would create a series per distinct value, without bound.
    """
    from csi_driver.volumes import library, sockets

    volume_type = context.get("type")
    if volume_type is None:
        mode = context.get("mode")
        return mode if mode in sockets.LEGACY_MODES else INVALID_TYPE
    known = volume_type in sockets.KNOWN_TYPES or volume_type in library.TYPES
    return volume_type if known else INVALID_TYPE


def resolve(context: Mapping[str, str], config: Config) -> VolumeSource:
    from csi_driver.volumes import library, sockets

    source = library.resolve(context, config) or sockets.resolve(context, config)
    if source is None:
        raise unsupported(
            "volume_context must set 'type' to one of "
            + ", ".join((*sockets.TYPES, *library.TYPES))
            + " (or the deprecated 'mode' and 'path' pair)"
        )
    return source
