"""Host paths compared with the sockets they may expose.

A ``hostPath`` reaches a socket when it is the socket itself, its directory,
or any directory above it (``/var/run`` exposes ``/var/run/datadog/dsd.socket``).
Paths are compared lexically after normalisation (``//``, ``.``, ``..``, a
trailing slash), as written and, failing that, with ``/var/run`` taken as
``/run``: it is a symlink to it on the distributions Kubernetes nodes run, so
``/run/datadog`` is the agent's directory as much as ``/var/run/datadog`` is.
Other symlinks on the node are not known here.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from enum import Enum

# (spelling, the path it resolves to on a node)
_ALIASES = (("/var/run", "/run"),)

# File names of container runtime sockets wherever they are, and where the
# common runtimes put theirs (directories above them expose them too).
RUNTIME_SOCKET_NAMES = frozenset({"docker.sock", "containerd.sock", "crio.sock", "cri-dockerd.sock",
                                  "dockershim.sock"})
KNOWN_RUNTIME_SOCKETS = (
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/cri-dockerd.sock",
    "/run/dockershim.sock",
    "/run/k3s/containerd/containerd.sock",
)


class Reach(Enum):
    NONE = "none"
    SAME = "same"  # the host path is the target
    ABOVE = "above"  # the host path is a directory above the target


def normalize(path: str) -> str:
    """Absolute, single slashes, no ``.``/``..`` components, no trailing slash."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def canonical(path: str) -> str:
    """``normalize``, with the aliased prefixes spelled as what they resolve to."""
    path = normalize(path)
    for alias, target in _ALIASES:
        if path == alias or path.startswith(alias + "/"):
            return target + path[len(alias):]
    return path


def _relation(host: str, goal: str) -> Reach:
    if host == goal:
        return Reach.SAME
    if host == "/" or goal.startswith(host + "/"):
        return Reach.ABOVE
    return Reach.NONE


def _matching(host_path: str, target: str) -> tuple[Reach, str, str, bool]:
    """The relation, the spellings it holds in, and whether aliases had to be resolved for it:
    ``/var`` is above ``/var/run/datadog`` as written only, ``/run`` above it resolved only."""
    for resolved, spell in ((False, normalize), (True, canonical)):
        host, goal = spell(host_path), spell(target)
        relation = _relation(host, goal)
        if relation is not Reach.NONE:
            return relation, host, goal, resolved
    return Reach.NONE, normalize(host_path), normalize(target), False


def reach(host_path: str, target: str) -> Reach:
    return _matching(host_path, target)[0]


def below(target: str, host_path: str) -> str:
    """Where ``target`` lies below ``host_path`` (``"."`` when they are the same)."""
    _relation, host, goal, _resolved = _matching(host_path, target)
    return posixpath.relpath(goal, host)


def aliased(host_path: str, target: str) -> bool:
    """True when the two only match through an alias (``/run`` against ``/var/run``)."""
    return _matching(host_path, target)[3]


@dataclass(frozen=True)
class AgentSocket:
    """One of the agent's sockets and the CSI volume types that serve it."""

    name: str  # dsd | apm
    path: str
    file_type: str
    directory_type: str

    @property
    def directory(self) -> str:
        return posixpath.dirname(self.path)


def agent_sockets(dsd_path: str, apm_path: str) -> tuple[AgentSocket, AgentSocket]:
    return (AgentSocket("dsd", normalize(dsd_path), "DSDSocket", "DSDSocketDirectory"),
            AgentSocket("apm", normalize(apm_path), "APMSocket", "APMSocketDirectory"))


def runtime_sockets_reached(host_path: str) -> tuple[str, ...]:
    """The container runtime sockets a ``hostPath`` exposes, spelled from it."""
    path = normalize(host_path)
    if posixpath.basename(path) in RUNTIME_SOCKET_NAMES:
        return (path,)
    return tuple(normalize(posixpath.join(path, below(socket, path)))
                 for socket in KNOWN_RUNTIME_SOCKETS if reach(path, socket) is not Reach.NONE)
