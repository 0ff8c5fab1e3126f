"""What replaces a ``hostPath`` volume that reaches the agent's sockets.

Each mount of the volume is followed to the host path it actually exposes
(``hostPath.path`` joined with the mount's ``subPath``):

- the socket itself: a socket-file volume (``DSDSocket``, ``APMSocket``) at the
  same ``mountPath``;
- the socket's directory: a directory volume (``DSDSocketDirectory``,
  ``APMSocketDirectory``) at the same ``mountPath``; when both sockets share the
  directory, one volume serves both;
- a directory above it (``/var/run``): a directory volume holds only the
  socket's directory, so it is mounted where the container saw that directory
  (``mountPath`` joined with the rest of the way, ``/var/run/datadog``). The
  socket the container then finds is at the very path it used before; the rest
  of the host directory is no longer visible. Only the sockets the container's
  command, arguments or environment name are kept; when it names neither, both
  are (the conservative choice).

``subPath`` is dropped in every case: the CSI volume's root already is the
socket or its directory. A volume that some mount uses for anything else, a
``subPathExpr`` (its value is only known on the node) and mounts of ephemeral
containers are not changed automatically; the plan says why.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from csi_driver.check.paths import AgentSocket, Reach, aliased, below, normalize, reach

Obj = Mapping[str, Any]
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
MAX_NAME = 63


@dataclass(frozen=True)
class MountRef:
    field: str  # initContainers | containers | ephemeralContainers
    container_index: int
    container: str
    mount_index: int
    mount: Obj


@dataclass(frozen=True)
class MountChange:
    ref: MountRef
    mounts: tuple[Obj, ...]  # the first replaces the old mount, the others are added beside it


@dataclass(frozen=True)
class Plan:
    volume: str
    volume_index: int
    host_path: str
    sockets: tuple[str, ...]  # agent sockets the volume's root reaches (dsd, apm)
    csi_volumes: tuple[tuple[str, str], ...]  # (name, type); the first keeps the old volume's name
    changes: tuple[MountChange, ...]
    blockers: tuple[str, ...]  # why no patch is offered
    notes: tuple[str, ...]

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(kind for _name, kind in self.csi_volumes)


@dataclass(frozen=True)
class _Need:
    """One CSI volume a mount needs, and where it goes in the container."""

    volume_type: str
    mount_path: str


def mounts_of(spec: Obj, volume: str) -> Iterator[MountRef]:
    for field in CONTAINER_FIELDS:
        for ci, container in enumerate(spec.get(field) or []):
            for mi, mount in enumerate(container.get("volumeMounts") or []):
                if mount.get("name") == volume:
                    yield MountRef(field, ci, container.get("name", "?"), mi, mount)


def sockets_reached(path: str, sockets: tuple[AgentSocket, ...]) -> tuple[AgentSocket, ...]:
    """The agent sockets a host path exposes: the socket, its directory or a directory above."""
    return tuple(s for s in sockets if reach(path, s.path) is not Reach.NONE)


def _mentions(spec: Obj, ref: MountRef) -> str:
    """Everything in the container that may name a socket path: command, args, env values."""
    container = (spec.get(ref.field) or [])[ref.container_index]
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    words += [str(env.get("value", "")) for env in container.get("env") or []]
    return "\n".join(words)


def _directory_type(group: list[AgentSocket]) -> str:
    """One directory volume serves every socket in it; DSD's type unless only APM is used."""
    return group[0].directory_type if len(group) == 1 else next(s.directory_type for s in group if s.name == "dsd")


class _Planner:
    def __init__(self, spec: Obj, volume_index: int, sockets: tuple[AgentSocket, ...]) -> None:
        self.spec = spec
        self.volume_index = volume_index
        self.volume = (spec.get("volumes") or [])[volume_index]
        self.host_path = str((self.volume.get("hostPath") or {}).get("path", ""))
        self.sockets = sockets
        self.blockers: list[str] = []
        self.notes: list[str] = []

    def needs(self, ref: MountRef) -> list[_Need]:
        mount = ref.mount
        where = f'{ref.container} mounts it at {mount.get("mountPath")}'
        if ref.field == "ephemeralContainers":
            self.blockers.append(f"ephemeral container {where}: ephemeral containers cannot be patched")
            return []
        if mount.get("subPathExpr"):
            self.blockers.append(f"container {where} with subPathExpr {mount['subPathExpr']!r}, known only on "
                                 "the node: change it by hand")
            return []
        exposed = normalize(posixpath.join(self.host_path, mount.get("subPath") or "."))
        reached = sockets_reached(exposed, self.sockets)
        if not reached:
            self.blockers.append(f"container {where} for {exposed}, which holds neither agent socket: the volume "
                                 "serves more than the agent; split it by hand")
            return []
        files = [s for s in reached if reach(exposed, s.path) is Reach.SAME]
        if files:
            self.notes.append(f"container {ref.container}: {files[0].file_type} pins the socket, so after an agent "
                              "restart the pod keeps the dead one until it restarts; "
                              f"{files[0].directory_type}, mounted on a directory, does not")
            return [_Need(files[0].file_type, mount["mountPath"])]
        return self._directory_needs(ref, exposed, self._used(ref, exposed, reached))

    def _used(self, ref: MountRef, exposed: str, reached: tuple[AgentSocket, ...]) -> list[AgentSocket]:
        """The reached sockets the container names, or all of them when it names none."""
        if len(reached) == 1:
            return list(reached)
        text = _mentions(self.spec, ref)
        named = [s for s in reached if self._in_container(ref, exposed, s) in text]
        if not named and len({s.directory for s in reached}) > 1:
            self.notes.append(f"container {ref.container} names neither socket's path in its command, arguments "
                              "or environment: both sockets' directories are mounted")
        return named or list(reached)

    @staticmethod
    def _in_container(ref: MountRef, exposed: str, socket: AgentSocket) -> str:
        return normalize(posixpath.join(ref.mount["mountPath"], below(socket.path, exposed)))

    def _directory_needs(self, ref: MountRef, exposed: str, used: list[AgentSocket]) -> list[_Need]:
        by_directory: dict[str, list[AgentSocket]] = {}
        for socket in used:
            by_directory.setdefault(socket.directory, []).append(socket)
        needs = []
        for directory, group in by_directory.items():
            rest = below(directory, exposed)
            path = normalize(posixpath.join(ref.mount["mountPath"], rest))
            if rest != ".":
                self.notes.append(f"container {ref.container}: the volume exposed {exposed} at "
                                  f"{ref.mount['mountPath']}; the CSI volume holds only {directory}, so it is "
                                  f"mounted at {path}, where the socket was; the rest of {exposed} is no longer "
                                  "visible")
            needs.append(_Need(_directory_type(group), path))
        return needs

    def volume_names(self, types: list[str]) -> dict[str, str]:
        taken = {v.get("name") for v in self.spec.get("volumes") or []}
        names = {types[0]: self.volume["name"]} if types else {}
        for kind in types[1:]:
            base = f"{self.volume['name'][:MAX_NAME - len(kind) - 4]}-{kind.lower()}"
            name, n = base, 2
            while name in taken:
                name, n = f"{base}-{n}", n + 1
            taken.add(name)
            names[kind] = name
        return names


def _replacement_mount(old: Obj, name: str, mount_path: str) -> dict[str, Any]:
    mount = {k: v for k, v in old.items() if k not in ("subPath", "subPathExpr")}
    mount.update(name=name, mountPath=mount_path)
    return mount


def _root_needs(planner: _Planner) -> list[str]:
    """Types for a volume no container mounts: what its root reaches."""
    reached = sockets_reached(planner.host_path, planner.sockets)
    files = [s.file_type for s in reached if reach(planner.host_path, s.path) is Reach.SAME]
    if files:
        return files
    groups: dict[str, list[AgentSocket]] = {}
    for socket in reached:
        groups.setdefault(socket.directory, []).append(socket)
    return [_directory_type(group) for group in groups.values()]


def _collisions(spec: Obj, changes: list[MountChange]) -> list[str]:
    """New mount paths a container already uses for another mount."""
    found = []
    for change in changes:
        container = (spec.get(change.ref.field) or [])[change.ref.container_index]
        others = {normalize(m.get("mountPath", "")) for i, m in enumerate(container.get("volumeMounts") or [])
                  if i != change.ref.mount_index}
        found += [f"container {change.ref.container} already mounts something at {m['mountPath']}"
                  for m in change.mounts if normalize(m["mountPath"]) in others]
    return found


def plan(spec: Obj, volume_index: int, sockets: tuple[AgentSocket, ...]) -> Plan:
    """The replacement of the ``hostPath`` volume at ``volume_index`` of a pod spec."""
    planner = _Planner(spec, volume_index, sockets)
    refs = list(mounts_of(spec, planner.volume["name"]))
    needs = [(ref, planner.needs(ref)) for ref in refs]
    types = list(dict.fromkeys(need.volume_type for _ref, found in needs for need in found))
    if not refs:
        types = _root_needs(planner)
        planner.notes.append("no container mounts this volume: removing it would do as well")
    names = planner.volume_names(types)
    changes = [MountChange(ref, tuple(_replacement_mount(ref.mount, names[n.volume_type], n.mount_path)
                                      for n in found))
               for ref, found in needs if found]
    blockers = planner.blockers + _collisions(spec, changes)
    notes = list(dict.fromkeys(planner.notes))
    notes += [f"{planner.host_path} reaches {s.path} because /var/run is /run on the node"
              for s in sockets_reached(planner.host_path, sockets) if aliased(planner.host_path, s.path)][:1]
    return Plan(volume=planner.volume["name"], volume_index=volume_index, host_path=planner.host_path,
                sockets=tuple(s.name for s in sockets_reached(planner.host_path, sockets)),
                csi_volumes=tuple((names[t], t) for t in types), changes=tuple(changes),
                blockers=tuple(blockers), notes=tuple(notes))
