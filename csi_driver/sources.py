"""The agent side of a mount: the configured socket paths, opened by descriptor.

The agent's socket directory is shared: the agent writes its sockets there, and
with Datadog's own chart any pod holding a read-write directory volume can write
there too. Whoever can write there can replace ``dsd.socket`` with a symlink (to
another pod's token file, to this driver's own CSI socket) between a check by
name and a mount by name. So a source is never mounted by name:

- the configured socket directories are resolved once, at start-up, and logged:
  symlinks in their prefix (``/var/run -> /run``) are the node's own layout, set
  up by whoever owns the node, not by pods (a part that does not exist yet is
  taken as it is written, and must appear as real directories);
- at publish time the resolved directory is walked from ``/`` one component at a
  time with ``O_NOFOLLOW``, and the leaf (the socket file, or the directory
  itself) is opened ``O_PATH|O_NOFOLLOW``: a symlink anywhere is refused;
- the leaf's type is checked on that descriptor, and that same descriptor is
  what gets mounted (``mounts.bind_mount``).

Nothing outside the two configured socket paths and their directories can be
opened here, whatever a request says.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass

from csi_driver.config import Config
from csi_driver.errors import RequestError, precondition
from csi_driver.mounts import Identity, identity
from csi_driver.targets import Blocked, descend
from csi_driver.volumes import Kind, VolumeSource

log = logging.getLogger(__name__)
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LEAF_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

@dataclass
class OpenSource:
    """An opened agent socket or directory; the caller closes it (or uses ``with``)."""

    fd: int
    stat: os.stat_result
    # What is recorded as published, when more precise than the request's
    # source (a library's content directory in the store).
    resolved: VolumeSource | None = None

    @property
    def identity(self) -> Identity:
        return identity(self.stat)

    def keep(self, volume_id: str, target_path: str) -> None:
        """Called once the source is mounted at ``target_path``: a family that
        tracks which volume uses what records it here (a failure undoes the mount)."""

    def still_linked(self) -> bool:
        """False once the agent removed it (its inode lives on only through us)."""
        return os.fstat(self.fd).st_nlink > 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Directory:
    """One configured socket directory and what it resolved to at start-up.

    Only the part that exists is resolved: on a fresh node the agent may
    create its directory after the driver starts, and whatever appears later
    must be real directories (the walk refuses symlinks), never a symlink
    planted there since.
    """

    def __init__(self, configured: str) -> None:
        self.configured = configured
        existing, missing = configured, list[str]()
        while not os.path.isdir(existing) and existing != "/":
            existing, name = os.path.split(existing)
            missing.insert(0, name)
        self.resolved = os.path.join(os.path.realpath(existing), *missing)
        self.missing_at_start = bool(missing)

    def describe(self) -> str:
        return self.resolved + (" (does not exist yet)" if self.missing_at_start else "")


class AgentSources:
    """Opens the agent's configured sockets and directories, and nothing else."""

    def __init__(self, config: Config) -> None:
        self._directories: dict[str, _Directory] = {}
        self._sockets = (config.dsd_host_socket_path, config.apm_host_socket_path)
        for socket_path in self._sockets:
            configured = os.path.dirname(socket_path)
            if configured not in self._directories:
                self._directories[configured] = _Directory(configured)

    def log_resolution(self) -> None:
        for directory in self._directories.values():
            log.info("agent socket directory resolved",
                     extra={"configured": directory.configured, "resolved": directory.describe()})

    def resolved(self, configured_dir: str) -> str:
        """The resolved path of a configured socket directory."""
        return self._directory(configured_dir).resolved

    def open(self, source: VolumeSource) -> OpenSource:
        """Open ``source`` without following any symlink; raise FAILED_PRECONDITION
        with what to do when it is missing, of the wrong type or a symlink."""
        if source.kind is Kind.SOCKET:
            configured_dir, name = os.path.split(source.host_path)
        else:
            configured_dir, name = source.host_path, ""
        directory = self._directory(configured_dir)
        what = "socket" if source.kind is Kind.SOCKET else "socket directory"
        dir_fd = _walk(directory, source.host_path, what)
        if not name:
            return OpenSource(dir_fd, os.fstat(dir_fd))
        try:
            try:
                fd = os.open(name, _LEAF_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                raise _missing(what, source.host_path) from None
            except OSError as err:
                raise precondition(f"cannot open {source.host_path}: "
                                   f"{os.strerror(err.errno or 0)}") from None
        finally:
            os.close(dir_fd)
        opened = OpenSource(fd, os.fstat(fd))
        if not stat.S_ISSOCK(opened.stat.st_mode):
            opened.close()
            if stat.S_ISLNK(opened.stat.st_mode):
                raise precondition(
                    f"{source.host_path} is a symlink, not the agent's socket; this driver mounts "
                    "only the socket itself (point the socket path flag at the real socket)")
            raise precondition(f"{source.host_path} exists but is not a Unix socket")
        if opened.stat.st_nlink != 1:
            # The agent binds its socket once; another name for the same inode
            # is someone linking a different socket in under the agent's name.
            opened.close()
            raise precondition(f"{source.host_path} has {opened.stat.st_nlink} names (hard "
                               "links); the agent's own socket has one, refusing to mount it")
        return opened

    def awaited_socket(self, source: VolumeSource) -> tuple[str, str]:
        """The agent socket a publish of ``source`` needs, as configured and as
        resolved: the socket itself, or for a directory the socket inside it
        (the APM one for the APM types when both share the directory)."""
        if source.kind is Kind.SOCKET:
            configured = source.host_path
        else:
            self._directory(source.host_path)  # refuses any other directory
            inside = [path for path in self._sockets if os.path.dirname(path) == source.host_path]
            apm = self._sockets[1]
            configured = apm if source.type.startswith("APM") and apm in inside else inside[0]
        directory, name = os.path.split(configured)
        return configured, os.path.join(self._directory(directory).resolved, name)

    def live_identity(self, source: VolumeSource) -> Identity | None:
        """The identity of the source as it is now, or None when it cannot be opened."""
        try:
            with self.open(source) as opened:
                return opened.identity
        except (RequestError, OSError):
            return None

    def live_identities(self) -> dict[Identity, str]:
        """Identity -> path of every configured socket and directory there now."""
        found: dict[Identity, str] = {}
        sources = [VolumeSource("", path, Kind.SOCKET) for path in self._sockets] + [
            VolumeSource("", path, Kind.DIRECTORY) for path in self._directories]
        for source in sources:
            live = self.live_identity(source)
            if live is not None:
                found.setdefault(live, source.host_path)
        return found

    def _directory(self, configured_dir: str) -> _Directory:
        directory = self._directories.get(configured_dir)
        if directory is None:
            # Only a programming error gets here: volume families build their
            # sources from the same configuration.
            raise precondition(f"{configured_dir} is not one of the configured agent socket "
                               "directories; refusing to mount it")
        return directory


def _walk(directory: _Directory, shown: str, what: str) -> int:
    """An O_PATH fd of the resolved directory, reached without following symlinks."""
    try:
        return descend(os.open("/", _DIR_FLAGS & ~os.O_NOFOLLOW),
                       filter(None, directory.resolved.split("/")), "")
    except Blocked as stop:
        if stop.errno == errno.ENOENT:
            raise _missing(what, shown) from None
        if stop.errno in (errno.ELOOP, errno.ENOTDIR):
            raise precondition(
                f"{stop.path} is not a directory or has become a symlink since start-up, "
                f"when {directory.configured} resolved to {directory.resolved}; refusing "
                f"to mount the agent's {what} through it (restart the driver if the "
                "node's layout changed on purpose)") from None
        raise precondition(f"cannot open {stop.path}: {os.strerror(stop.errno)}") from None


def _missing(what: str, path: str) -> RequestError:
    return precondition(
        f"Datadog Agent {what} {path} does not exist on this node; check that the agent runs here "
        "with this socket enabled and that the driver's socket path flags match")
