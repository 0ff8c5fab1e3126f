"""The library cache: resolve a volume's image, pull it once, open it for mounting.

Publishing a DatadogLibrary volume:

1. resolve the reference to this platform's manifest digest: a digest the
   store already holds needs no registry call, nor does a tag resolved within
   the last hour; concurrent resolutions of one reference share one request;
2. pin the digest (the cleanup never deletes a pinned library), then pull it
   if the store lacks it: one pull per digest however many publishes ask at
   once (``Flights``), each layer fetched into an unnamed temporary file,
   verified, then applied onto a scratch directory, the whole image bounded by
   ``--library-max-size`` and ``--library-download-timeout``;
3. open the content directory by descriptor (``Store.open_content``);
4. once mounted, link the target to the digest (``OpenLibrary.keep``), then unpin.

Unpublishing unlinks; a library left with no link is deleted after the
cleanup delay by ``CleanupTimer``, which re-checks pins, links and the mount
table before it deletes anything.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import grpc

from csi_driver import mounts, targets
from csi_driver.admission import waiting
from csi_driver.config import Config
from csi_driver.errors import RequestError, internal, precondition
from csi_driver.library import preload
from csi_driver.library.cleanup import DELAYED, IMMEDIATE, CleanupTimer
from csi_driver.library.family import Libraries
from csi_driver.library.flights import Flights
from csi_driver.library.links import Library, Link, LinksDatabase
from csi_driver.library.metrics import (
    CACHE_HIT,
    DOWNLOADED,
    FAILED,
    OTHER,
    SKIPPED_IN_USE,
    SUCCESS,
    LibraryMetrics,
    PackageState,
)
from csi_driver.library.store import STORE, ContentMissing, Scratch, Store, remove_tree
from csi_driver.mounts import Identity, identity
from csi_driver.oci.layers import apply_layer
from csi_driver.oci.reference import ImageReference
from csi_driver.oci.registry import Blob, Image, RegistryClient
from csi_driver.registry import Published
from csi_driver.sources import OpenSource
from csi_driver.volumes import Kind, VolumeSource
from csi_driver.volumes.library import (
    INJECTOR_CONTENT,
    LIBRARY,
    LIBRARY_CONTENT,
    MOUNT_ATTRS,
    LibraryImage,
    content_dir,
)

log = logging.getLogger(__name__)


@dataclass
class OpenLibrary(OpenSource):
    """A library's content directory, pinned in the store until closed."""

    digest: str = ""
    on_keep: Callable[[str, str, str], None] | None = None  # (volume_id, target_path, digest)
    on_close: Callable[[str], None] | None = None

    def keep(self, volume_id: str, target_path: str) -> None:
        if self.on_keep is not None:
            self.on_keep(volume_id, target_path, self.digest)

    def close(self) -> None:
        super().close()
        if self.on_close is not None:
            release, self.on_close = self.on_close, None
            release(self.digest)


class LibraryCache(Libraries):
    def __init__(self, config: Config, store: Store, db: LinksDatabase, registry: RegistryClient,
                 metrics: LibraryMetrics, preload_path: str) -> None:
        super().__init__("")
        self.store, self.db, self.registry, self.metrics = store, db, registry, metrics
        self._pods_dir = config.pods_dir
        self._timeout = config.library_download_timeout
        self._max_size = config.library_max_size
        self._delay = config.library_cleanup_delay
        self._strategy = IMMEDIATE if self._delay <= 0 else DELAYED
        self._preload_path = preload_path
        self._guard = threading.Lock()  # pins against the cleanup's decision
        self._pins: Counter[str] = Counter()
        self._pulls: Flights[int] = Flights()
        self._resolutions: Flights[Image] = Flights()
        # What start-up recovery may adopt, built on first use and dropped after.
        self._adoptable: dict[Identity, tuple[str, VolumeSource]] | None = None
        self.timer = CleanupTimer(self._due, self._collect)
        metrics.set_state(self._package_state)

    def start(self) -> None:
        self._reconcile_store()
        self.timer.start()

    def abort_pulls(self) -> None:
        # Each waiting publish gets UNAVAILABLE, the kubelet retries it against the
        # next driver process, and a pull cut short leaves only its scratch
        # directory, which unwinding removes.
        self.registry.abort("the pull was stopped because the driver is shutting down; "
                            "the kubelet retries")

    def close(self) -> None:
        self.timer.stop()
        self.db.close()

    # ------------------------------------------------------------ publish

    def open(self, source: VolumeSource) -> OpenSource:
        if source.image is None:
            return self._open_preload(source)
        image = source.image
        try:
            opened, result = self._open_library(source, image)
        except BaseException:
            self.metrics.resolution(self._library_label(image.package), FAILED)
            raise
        self.metrics.resolution(self._library_label(image.package), result)
        return opened

    def _open_preload(self, source: VolumeSource) -> OpenSource:
        try:
            fd = preload.open_file(self._preload_path)
        except OSError as err:
            raise precondition(f"cannot prepare the injector's preload file {self._preload_path}: "
                               f"{os.strerror(err.errno) if err.errno else err}") from None
        return OpenSource(fd, os.fstat(fd), replace(source, host_path=self._preload_path))

    def _open_library(self, source: VolumeSource, image: LibraryImage) -> tuple[OpenLibrary, str]:
        deadline = time.monotonic() + self._timeout
        ref = image.reference
        try:
            digest, fetched = self._resolve(ref, deadline)
            with self._guard:
                self._pins[digest] += 1
            try:
                result = CACHE_HIT
                if not self.store.has(digest):
                    result = DOWNLOADED
                    with waiting():  # a download must not hold up the calls of other volumes
                        self._pulls.run(digest,
                                        lambda: self._pull(image, digest, fetched, deadline),
                                        deadline - time.monotonic())
                fd = self._open_content(digest, image.content, ref)
            except BaseException:
                self._unpin(digest)
                raise
        except TimeoutError:
            raise self._out_of_time(ref) from None
        except OSError as err:
            raise _storage_error(err, self.store.root) from None
        resolved = replace(source, host_path=os.path.join(self.store.entry(digest), image.content))
        return OpenLibrary(fd, os.fstat(fd), resolved, digest=digest, on_keep=self._link,
                           on_close=self._unpin), result

    def _resolve(self, ref: ImageReference, deadline: float) -> tuple[str, Image | None]:
        """This platform's manifest digest for ``ref``, and the manifest when it
        had to be fetched (None: known without asking the registry)."""
        if ref.digest is not None:
            known = self.db.platform_digest(ref.digest) or ref.digest
            if self.store.has(known):
                return known, None
        else:
            cached = self.db.tag(str(ref))
            if cached is not None and self.store.has(cached):
                return cached, None
        with waiting():
            fetched = self._resolutions.run(str(ref), lambda: self._ask_registry(ref, deadline),
                                            deadline - time.monotonic())
        return fetched.digest, fetched

    def _ask_registry(self, ref: ImageReference, deadline: float) -> Image:
        fetched = self.registry.resolve(ref, deadline)
        if ref.digest is None:
            self.db.remember_tag(str(ref), fetched.digest)
        if fetched.index_digest is not None and fetched.index_digest != fetched.digest:
            self.db.remember_platform_digest(fetched.index_digest, fetched.digest)
        return fetched

    def _pull(self, image: LibraryImage, digest: str, fetched: Image | None, deadline: float) -> int:
        if self.store.has(digest):  # stored by the pull that just finished
            return 0
        started = time.monotonic()
        ref = image.reference
        if fetched is None or fetched.digest != digest:
            fetched = self.registry.resolve(replace(ref, digest=digest), deadline)
        total = sum(blob.size for blob in fetched.layers)
        if total > self._max_size:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"library image {ref} has {total} bytes of layers, over this node's "
                               f"limit of {self._max_size} (--library-max-size)")
        with self.store.scratch() as scratch:
            written = 0
            for blob in fetched.layers:
                if time.monotonic() >= deadline:
                    raise self._out_of_time(ref)
                written += self._apply(ref, blob, scratch, deadline, written)
            try:
                self.store.check_content(scratch, image.content)
            except ContentMissing as missing:
                raise precondition(
                    f"library image {ref} has no directory {image.content} ({missing.reason}); "
                    f"it is not a library image for package {image.package}") from None
            self.store.commit(scratch, digest)
        self._record(Library(digest, image.package, image.registry, written, time.time()))
        seconds = time.monotonic() - started
        self.metrics.download(self._library_label(image.package),
                              self.metrics.registry_label(image.registry), seconds)
        log.info("library pulled", extra={"image": str(ref), "digest": digest, "bytes": written,
                                          "seconds": round(seconds, 3)})
        return written

    def _apply(self, ref: ImageReference, blob: Blob, scratch: Scratch, deadline: float,
               written: int) -> int:
        # Fetched whole and verified against its digest before a byte of it is
        # applied; an unnamed file, gone with its descriptor whatever happens.
        with tempfile.TemporaryFile(dir=self.store.scratch_root) as layer:
            self.registry.fetch_blob(ref, blob, layer, deadline, self._max_size)
            layer.seek(0)
            try:
                return apply_layer(layer, blob.media_type, scratch.fd, max_bytes=self._max_size - written)
            except RequestError as err:
                raise RequestError(err.code, f"library image {ref}, layer {blob.digest}: "
                                             f"{err.message}") from None

    def _record(self, library: Library) -> None:
        """Add a stored library to the database; without that it cannot stay."""
        try:
            self.db.add_library(library)
        except BaseException:
            away = self.store.detach(library.digest)
            if away is not None:
                remove_tree(away)
            raise

    def _open_content(self, digest: str, content: str, ref: ImageReference) -> int:
        try:
            return self.store.open_content(digest, content)
        except ContentMissing as missing:
            raise precondition(f"library image {ref} ({digest}) has no directory {content} to "
                               f"mount: {missing.path} {missing.reason}") from None

    def _out_of_time(self, ref: ImageReference) -> RequestError:
        return RequestError(grpc.StatusCode.UNAVAILABLE,
                            f"pulling library image {ref} did not finish within {self._timeout:g}s "
                            "(--library-download-timeout); the kubelet retries")

    def _link(self, volume_id: str, target_path: str, digest: str) -> None:
        self.db.link(Link(target_path, volume_id, digest))

    def _unpin(self, digest: str) -> None:
        with self._guard:
            self._pins[digest] -= 1
            if self._pins[digest] <= 0:
                del self._pins[digest]

    def _library_label(self, package: str) -> str:
        stored = {library.package for library in self.db.libraries().values()}
        return self.metrics.library_label(package, stored)

    # -------------------------------------------------- republish, unpublish

    def holding(self, volume_id: str, target_path: str, mounted: Identity,
                source: VolumeSource) -> VolumeSource | None:
        if source.image is None:
            try:
                fd = os.open(self._preload_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                ours = identity(os.fstat(fd)) == mounted
            finally:
                os.close(fd)
            return replace(source, host_path=self._preload_path) if ours else None
        link = self.db.link_at(target_path)
        if link is None:
            return None
        library = self.db.library(link.digest)
        content = content_dir(library.package) if library is not None else source.image.content
        found = self._content_identity(link.digest, content)
        if found != mounted:
            return None
        return replace(source, host_path=os.path.join(self.store.entry(link.digest), content))

    def released(self, volume_id: str, target_path: str) -> None:
        link = self.db.unlink(target_path)
        if link is None:
            return
        if link.volume_id and link.volume_id != volume_id:
            log.warning("released a library link recorded for another volume at this target",
                        extra={"target": target_path, "recorded_volume_id": link.volume_id,
                               "volume_id": volume_id})
        self.timer.poke()

    def _content_identity(self, digest: str, content: str) -> Identity | None:
        try:
            fd = self.store.open_content(digest, content)
        except (ContentMissing, OSError, ValueError):
            return None
        try:
            return identity(os.fstat(fd))
        finally:
            os.close(fd)

    # ------------------------------------------------------------ recovery

    def source_of(self, mounted: os.stat_result) -> VolumeSource | None:
        if self._adoptable is None:
            self._adoptable = self._scan_adoptable()
        found = self._adoptable.get(identity(mounted))
        return found[1] if found is not None else None

    def _scan_adoptable(self) -> dict[Identity, tuple[str, VolumeSource]]:
        """Identity -> (digest, source) of everything a volume of this family
        may have mounted: each stored library's content and the preload file."""
        found: dict[Identity, tuple[str, VolumeSource]] = {}
        libraries = self.db.libraries()
        for digest in self.store.digests():
            library = libraries.get(digest)
            contents = ((content_dir(library.package),) if library is not None
                        else (LIBRARY_CONTENT, INJECTOR_CONTENT))
            for content in contents:
                got = self._content_identity(digest, content)
                if got is not None:
                    path = os.path.join(self.store.entry(digest), content)
                    found[got] = (digest, VolumeSource(LIBRARY, path, Kind.DIRECTORY, attrs=MOUNT_ATTRS,
                                                       requires_readonly=True))
        try:
            found[identity(os.stat(self._preload_path, follow_symlinks=False))] = (
                "", VolumeSource("DatadogInjectorPreload", self._preload_path, Kind.FILE,
                                 attrs=MOUNT_ATTRS, requires_readonly=True))
        except OSError:
            pass
        return found

    def reconcile(self, published: Mapping[str, Published]) -> None:
        """After recovery: link every adopted library mount, and drop the links
        of targets that provably mount nothing any more (the pod went while the
        driver was down, or the node rebooted)."""
        adoptable = self._adoptable if self._adoptable is not None else self._scan_adoptable()
        self._adoptable = None
        adopted: dict[str, tuple[str, str]] = {}
        for target_path, entry in published.items():
            found = adoptable.get(entry.mounted)
            if found is not None and found[0]:
                adopted[target_path] = (entry.volume_id, found[0])
        for target_path, (volume_id, digest) in adopted.items():
            link = self.db.link_at(target_path)
            if link is None or link.digest != digest:
                known_id = volume_id or (link.volume_id if link is not None else "")
                self.db.link(Link(target_path, known_id, digest))
        for target_path in self.db.links():
            if target_path not in adopted and self._mounts_nothing(target_path):
                self.db.unlink(target_path)
        self.timer.poke()

    def _mounts_nothing(self, target_path: str) -> bool:
        """True only when ``target_path`` is certainly not a mount point."""
        try:
            target = targets.parse(target_path, self._pods_dir)
            parent_fd = targets.open_parent(target)
        except targets.ParentMissing:
            return True
        except (RequestError, OSError):
            return False
        try:
            try:
                fd = targets.open_leaf(parent_fd, target.leaf)
            except FileNotFoundError:
                return True
            try:
                return not mounts.is_mount_root(fd)
            finally:
                os.close(fd)
        except OSError:
            return False
        finally:
            os.close(parent_fd)

    def _reconcile_store(self) -> None:
        """Make the database and the store agree, before anything else runs."""
        libraries = self.db.libraries()
        stored = set(self.store.digests())
        for digest in sorted(set(libraries) - stored):
            log.warning("forgetting a library missing from the store", extra={"digest": digest})
            for link in self.db.links().values():
                if link.digest == digest:
                    self.db.unlink(link.target_path)
            self.db.remove_library(digest)
        for digest in sorted(stored - set(libraries)):
            # Stored by a process that stopped before recording it: kept (and
            # recorded) only while something mounts it.
            if self._mounted_somewhere(digest):
                self.db.add_library(Library(digest, "", "", _tree_bytes(self.store.entry(digest)),
                                            time.time()))
            else:
                log.info("removing an unrecorded library from the store", extra={"digest": digest})
                away = self.store.detach(digest)
                if away is not None:
                    remove_tree(away)
        linked = self.db.link_counts()
        for library in self.db.libraries().values():
            if not linked[library.digest] and library.unused_since is None:
                self.db.mark_unused(library.digest, time.time())

    # ------------------------------------------------------------- cleanup

    def _due(self, now: float) -> tuple[list[str], float | None]:
        linked = self.db.link_counts()
        due: list[str] = []
        next_due: float | None = None
        for library in self.db.libraries().values():
            if linked[library.digest] or library.unused_since is None:
                continue
            at = library.unused_since + self._delay
            if at <= now:
                due.append(library.digest)
            elif next_due is None or at < next_due:
                next_due = at
        self.db.forget_expired_tags()
        return due, next_due

    def _collect(self, digest: str) -> None:
        library = self.db.library(digest)
        label = (library.package or OTHER) if library is not None else OTHER
        in_use = self._mounted_somewhere(digest)
        away: str | None = None
        if not in_use:
            with self._guard:
                in_use = bool(self._pins[digest] or self._pulls.running(digest)
                              or self.db.link_counts()[digest])
                if not in_use:
                    try:
                        away = self.store.detach(digest)
                        self.db.remove_library(digest)
                    except OSError as err:
                        self._cleanup_failed(digest, label, err)
                        return
        if in_use:
            # Asked for again meanwhile: its delay starts over from now.
            self.db.mark_unused(digest, time.time())
            self.metrics.cleanup(label, SKIPPED_IN_USE, self._strategy)
            return
        try:
            if away is not None:
                remove_tree(away)
        except OSError as err:
            self._cleanup_failed(digest, label, err)
            return
        self.metrics.cleanup(label, SUCCESS, self._strategy)
        log.info("deleted a library no volume used", extra={"digest": digest, "library": label})

    def _cleanup_failed(self, digest: str, label: str, err: OSError) -> None:
        self.metrics.cleanup(label, FAILED, self._strategy)
        log.warning("could not delete an unused library; retried after the cleanup delay",
                    extra={"digest": digest, "error": os.strerror(err.errno or 0)})
        if self.db.library(digest) is not None:
            self.db.mark_unused(digest, time.time())

    def _mounted_somewhere(self, digest: str) -> bool:
        """Whether any mount in this namespace shows part of the entry: a last
        guard against deleting files a pod still sees, whatever the links say."""
        needle = f"/{STORE}/{digest}/"
        return any(needle in entry.root + "/" for entry in mounts.mount_table())

    # ------------------------------------------------------------- metrics

    def _package_state(self) -> dict[str, PackageState]:
        linked = self.db.link_counts()
        state: dict[str, PackageState] = {}
        for library in self.db.libraries().values():
            label = library.package or OTHER
            now = state.get(label, PackageState())
            state[label] = PackageState(now.cached + 1, now.cached_bytes + library.size,
                                        now.links + linked[library.digest])
        return state


def _storage_error(err: OSError, where: str) -> RequestError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"no space left for libraries under {where}: {os.strerror(err.errno)}")
    return internal(f"library store {where}: {os.strerror(err.errno or 0)}"
                    + (f" ({err.filename})" if err.filename else ""))


def _tree_bytes(path: str) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total
