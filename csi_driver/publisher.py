"""Publish and unpublish: the on-disk and mount-table work for one target.

Callers serialize work per volume and per target (see ``node.py``); this module
assumes it is alone on the target it is handed. Every failure path undoes what
this call created, so a refused or failed publish leaves the disk and the mount
table as they were.

The source comes from its volume family: the agent's sockets (``sources``) or
the library cache (``library``), which also learns which target uses what
(``OpenSource.keep`` on publish, ``Libraries.released`` on unpublish).

The mount calls go through the ``mounts`` module's functions, looked up at
call time: the unit tests replace them with an in-memory mount table.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from csi_driver import mounts, targets
from csi_driver.errors import RequestError, aborted, already_exists, internal, invalid, precondition
from csi_driver.library.family import Libraries
from csi_driver.mounts import Identity
from csi_driver.registry import Published, PublishedVolumes
from csi_driver.sources import AgentSources, OpenSource
from csi_driver.validation import Publish, Unpublish
from csi_driver.volumes import Kind, VolumeSource
from csi_driver.volumes.library import is_library_family

log = logging.getLogger(__name__)
MAX_LAYERS = 64  # a target stacked deeper than this is not the kubelet's doing
TARGET_FILE_MODE = 0o644
TARGET_DIR_MODE = 0o750
# What the target's own syscalls fail with when something else creates,
# removes or replaces it while a call works on it (the parent is held open).
_TARGET_RACED = frozenset({errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                           errno.ENOTEMPTY, errno.ELOOP})


class Publisher:
    def __init__(self, published: PublishedVolumes, sources: AgentSources,
                 libraries: Libraries | None = None) -> None:
        self.published = published
        self.sources = sources
        self.libraries = libraries or Libraries(
            "single-step instrumentation volumes are not served by this driver process")

    # ------------------------------------------------------------ publish

    def publish(self, req: Publish) -> bool:
        """Mount ``req.source`` at ``req.target``; False when it already was."""
        parent_fd = targets.open_parent(req.target)
        try:
            existing = targets.lstat_leaf(parent_fd, req.target.leaf)
            if existing is not None:
                if stat.S_ISLNK(existing.st_mode):
                    raise invalid(f"target {req.target.path} is a symlink; refusing to mount over it")
                if self._holds_this_volume(req, parent_fd):
                    return False
            with self._open_source(req.source) as source:
                created = self._prepare_target(req, parent_fd, existing)
                try:
                    self._mount(req, parent_fd, source)
                except BaseException:
                    if created:
                        _remove_created(parent_fd, req)
                    raise
                self.published.record(req.target.path, Published(
                    req.volume_id, source.resolved or req.source, source.identity))
            return True
        except mounts.MountError as err:
            raise internal(f"bind mount of {req.source.host_path} onto {req.target.path} failed: "
                           f"{os.strerror(err.errno or 0)}") from None
        except OSError as err:
            raise _raced_or(err, req.target) from None
        finally:
            os.close(parent_fd)

    def _open_source(self, source: VolumeSource) -> OpenSource:
        if is_library_family(source):
            return self.libraries.open(source)
        return self.sources.open(source)

    def _mount(self, req: Publish, parent_fd: int, source: OpenSource) -> None:
        target_fd = targets.open_leaf(parent_fd, req.target.leaf)
        try:
            _check_kind(req, os.fstat(target_fd))
            try:
                mounts.bind_mount(source.fd, target_fd, req.source.attrs)
            except mounts.MountError as err:
                if os.fstat(target_fd).st_nlink == 0:  # removed since it was opened
                    raise _changed(req.target, err) from None
                raise
        finally:
            os.close(target_fd)
        if not source.still_linked():
            # The agent removed it while we mounted (it is restarting): the pod
            # would get a dead socket or an orphaned directory from the start.
            self._unmount_all(parent_fd, req.target,
                              Published(req.volume_id, req.source, source.identity))
            raise precondition(f"{req.source.host_path} disappeared while publishing; the "
                               "Datadog Agent may be restarting, retry")
        try:
            source.keep(req.volume_id, req.target.path)
        except BaseException:
            self._unmount_all(parent_fd, req.target,
                              Published(req.volume_id, req.source, source.identity))
            raise

    def _holds_this_volume(self, req: Publish, parent_fd: int) -> bool:
        """Whether the target already holds this volume: if so, record it again;
        if it holds something else, raise ALREADY_EXISTS; False when nothing is
        mounted there."""
        target_fd = targets.open_leaf(parent_fd, req.target.leaf)
        try:
            if not mounts.is_mount_root(target_fd):
                return False
            other = self.published.other_volume_at(req.target.path, req.volume_id)
            if other is not None:
                raise already_exists(
                    f"target {req.target.path} already has volume {other} published; "
                    f"refusing to publish {req.volume_id} over it"
                )
            mounted = mounts.mounted_identity(target_fd)
            ours = self._mounted_source(req, mounted)
            if ours is None:
                raise already_exists(
                    f"target {req.target.path} is already a mount point of something other "
                    f"than {req.source.host_path}; unpublish it first"
                )
            # Idempotency compares what this driver would mount, never the
            # request's raw readOnly: socket volumes are always mounted with
            # the same options. One mounted without some of them (by an older
            # version) stays as it is: changing a mount's options does not
            # reach the pod's copy of it, only restarting the pod does.
            missing = req.source.attrs & ~mounts.mounted_attrs(target_fd)
            if missing:
                log.warning("volume was published without some of the options this version "
                            "mounts with; restart its pod to get them",
                            extra={"target": req.target.path, "missing": str(missing)})
            self.published.record(req.target.path, Published(req.volume_id, ours, mounted))
            return True
        finally:
            os.close(target_fd)

    def _mounted_source(self, req: Publish, mounted: Identity) -> VolumeSource | None:
        """What the target's mount (``mounted``) holds for this request, when it
        is this volume's source; None when it is something else."""
        if is_library_family(req.source):
            return self.libraries.holding(req.volume_id, req.target.path, mounted, req.source)
        known = self.published.lookup(req.target.path)
        # Ours if it is the live source, or what we recorded mounting from
        # the same source (an agent that re-created its socket since).
        # Compared by path, not type: a legacy ``mode: socket`` request and
        # the adopted ``DSDSocket`` record name the same socket.
        if mounted == self.sources.live_identity(req.source) or (
                known is not None and _same_source(known.source, req.source)
                and known.mounted == mounted):
            return req.source
        return None

    def _prepare_target(self, req: Publish, parent_fd: int, existing: os.stat_result | None) -> bool:
        """Make the leaf the right kind of empty mount point; True if created here."""
        leaf = req.target.leaf
        want_dir = req.source.kind is Kind.DIRECTORY
        if existing is not None:
            is_dir = stat.S_ISDIR(existing.st_mode)
            if not _is_empty_mount_point(parent_fd, leaf, existing):
                # Mounting over contents would hide them (the kubelet's
                # vol_data.json, files someone left in a directory).
                raise precondition(
                    f"target {req.target.path} exists but is not an empty file or directory; "
                    "refusing to mount over it"
                )
            if is_dir == want_dir:
                return False
            # A leftover empty mount point of the other kind (e.g. a directory
            # pre-created by a CO for a socket-file volume) is replaced.
            targets.remove_leaf(parent_fd, leaf, is_dir)
        try:
            if want_dir:
                os.mkdir(leaf, TARGET_DIR_MODE, dir_fd=parent_fd)
            else:
                fd = os.open(leaf, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             TARGET_FILE_MODE, dir_fd=parent_fd)
                os.close(fd)
        except FileExistsError:
            # Someone else created it between our check and now.
            raise aborted(f"target {req.target.path} appeared while publishing; retry") from None
        return True

    # ---------------------------------------------------------- unpublish

    def unpublish(self, req: Unpublish) -> bool:
        """Unmount every layer at the target and remove it; False if nothing was there."""
        try:
            parent_fd = targets.open_parent(req.target)
        except targets.ParentMissing:  # the kubelet cleaned up already
            self._forget(req)
            return False
        try:
            existing = targets.lstat_leaf(parent_fd, req.target.leaf)
            if existing is None:
                self._forget(req)
                return False
            if stat.S_ISLNK(existing.st_mode):
                raise invalid(f"target {req.target.path} is a symlink; refusing to touch it")
            other = self.published.other_volume_at(req.target.path, req.volume_id)
            if other is not None:
                log.warning("unpublishing a target recorded for another volume",
                            extra={"target": req.target.path, "recorded_volume_id": other,
                                   "volume_id": req.volume_id})
            self._unmount_all(parent_fd, req.target, self.published.lookup(req.target.path))
            self._remove_mount_point(parent_fd, req.target)
            self._forget(req)
            return True
        except mounts.MountError as err:
            raise internal(f"unmount of {req.target.path} failed: {os.strerror(err.errno or 0)}") from None
        except OSError as err:
            raise _raced_or(err, req.target) from None
        finally:
            os.close(parent_fd)

    def _forget(self, req: Unpublish) -> None:
        """Nothing is mounted at the target any more: forget what it held, and
        release the library it used (known from the links, even after a restart)."""
        self.published.forget(req.target.path)
        self.libraries.released(req.volume_id, req.target.path)

    def _unmount_all(self, parent_fd: int, target: targets.Target, known: Published | None) -> None:
        for layer in range(MAX_LAYERS + 1):
            try:
                fd = targets.open_leaf(parent_fd, target.leaf)
            except FileNotFoundError:  # removed meanwhile: nothing left to unmount
                return
            try:
                if not mounts.is_mount_root(fd):
                    return
                if layer == MAX_LAYERS:
                    raise precondition(f"target {target.path} has more than {MAX_LAYERS} stacked mounts")
                self._warn_if_foreign(fd, target, known)
                mounts.unmount(fd)
            finally:
                os.close(fd)

    def _warn_if_foreign(self, mount_root_fd: int, target: targets.Target,
                         known: Published | None) -> None:
        """The kubelet asked for this target to go, so it goes; but a mount of
        something other than the agent's paths is said out loud."""
        mounted = mounts.mounted_identity(mount_root_fd)
        if known is not None and known.mounted == mounted:
            return
        if mounted in self.sources.live_identities():
            return
        log.warning("unmounting a mount this driver did not make: its source is none of the "
                    "configured agent socket paths",
                    extra={"target": target.path, "mounted_device": mounted[0],
                           "mounted_inode": mounted[1], "source": mounts.mount_source(mount_root_fd)})

    def _remove_mount_point(self, parent_fd: int, target: targets.Target) -> None:
        st = targets.lstat_leaf(parent_fd, target.leaf)
        if st is None:
            return
        if not _removable(st):
            log.warning("target is not an empty mount point after unmount; left in place",
                        extra={"target": target.path})
            return
        try:
            targets.remove_leaf(parent_fd, target.leaf, stat.S_ISDIR(st.st_mode))
        except OSError as err:
            # rmdir refuses a directory with anything in it, and anything that
            # is no longer a directory (replaced since it was looked at).
            if err.errno not in (errno.ENOTEMPTY, errno.ENOTDIR):
                raise
            log.warning("target is not an empty mount point after unmount; left in place",
                        extra={"target": target.path})


def _same_source(a: VolumeSource, b: VolumeSource) -> bool:
    return (a.host_path, a.kind) == (b.host_path, b.kind)


def _remove_created(parent_fd: int, req: Publish) -> None:
    """Undo ``_prepare_target`` after a failed publish: remove the mount point it created."""
    try:
        targets.remove_leaf(parent_fd, req.target.leaf, req.source.kind is Kind.DIRECTORY)
    except OSError as err:
        log.warning("could not remove the target created by a failed publish",
                    extra={"target": req.target.path, "error": os.strerror(err.errno or 0)})


def _removable(st: os.stat_result) -> bool:
    """What unpublish may remove once unmounted: an empty regular file, or a
    directory (which rmdir itself removes only when empty, never through a
    symlink)."""
    if stat.S_ISREG(st.st_mode):
        return st.st_size == 0
    return stat.S_ISDIR(st.st_mode)


def _is_empty_mount_point(parent_fd: int, leaf: str, st: os.stat_result) -> bool:
    """An empty directory or an empty regular file (never following a symlink)."""
    if stat.S_ISREG(st.st_mode):
        return st.st_size == 0
    if not stat.S_ISDIR(st.st_mode):
        return False
    try:
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent_fd)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        if err.errno == errno.ELOOP:  # became a symlink since it was looked at
            return False
        raise
    try:
        with os.scandir(fd) as entries:
            return next(entries, None) is None
    finally:
        os.close(fd)


def _check_kind(req: Publish, st: os.stat_result) -> None:
    ok = stat.S_ISDIR(st.st_mode) if req.source.kind is Kind.DIRECTORY else stat.S_ISREG(st.st_mode)
    if not ok:
        raise aborted(f"target {req.target.path} changed type while publishing; retry")


def _raced_or(err: OSError, target: targets.Target) -> Exception:
    """ABORTED when the target changed under the call; anything else stays what it is."""
    return _changed(target, err) if err.errno in _TARGET_RACED else err


def _changed(target: targets.Target, err: OSError) -> RequestError:
    return aborted(f"target {target.path} changed while this call worked on it "
                   f"({os.strerror(err.errno or 0)}); retry")
