"""Applying one OCI image layer (a tar, plain or gzip) onto a directory.

Threat model: the layer comes from a registry the cluster admin allowed, and its
digest was checked, but neither makes its content trustworthy: whoever can push
to that registry writes the tar, and this code runs as root on the node. The
node's root filesystem must not be at the layer's mercy, so:

- every path is reached from the directory open at ``root_fd`` one component at
  a time with ``O_NOFOLLOW``. A symlink in the middle of an entry's path (planted
  by an earlier entry or an earlier layer) is refused, never followed, so no
  entry writes outside the root or through a link;
- names must be relative, free of ``..`` and at most ``PATH_MAX`` long; hard
  links must name a regular file already in the tree; symlink targets must stay
  inside the root, an absolute one being taken relative to the root as a
  container runtime resolves it, and are kept as written, never followed (see
  ``_check_symlink_target``);
- no device nodes, fifos, sparse files, extended attributes (so no file
  capabilities) or ownership from the tar: everything belongs to the driver's
  user, directories are 0755, files 0644, or 0755 when the tar lets anyone run
  them. Setuid, setgid, sticky and group/other write bits never reach the disk;
- the blob is read once, as a stream. ``max_bytes`` bounds the uncompressed tar
  stream (file content plus tar headers), which bounds both the bytes written
  and the work done whatever the compression ratio; a file whose declared size
  would cross the limit is refused before it is created, and pax or GNU
  long-name headers (held in memory) are limited to ``MAX_METADATA`` bytes.

A refused or broken layer raises ``LayerError`` at the first offending entry and
nothing more is written; what the layer wrote before stays in the directory,
which the caller discards.

Layers are applied with the OCI whiteout semantics: ``.wh.<name>`` removes
``<name>`` (with all it contains) from lower layers, ``.wh..wh..opq`` empties its
directory of lower-layer content; neither file is written, and entries of the
same layer are never hidden by its own whiteouts. An entry replaces whatever was
at its path before (removed first, a directory with all it holds, so nothing is
written through an old symlink), except that a directory merges with a directory.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, Protocol, Self

import grpc

from csi_driver.errors import RequestError

PATH_MAX = 4096
MAX_METADATA = 1 << 20  # a pax or GNU long-name header; real ones are a few hundred bytes
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Media types of image layers, with how their name says they are compressed.
_LAYER_MEDIA_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
_COPY_CHUNK = 1 << 20
_DIR_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LATEST_MTIME = 253402300799  # 9999-12-31: tar allows more than utimensat does

Path = tuple[str, ...]


class LayerError(RequestError):
    """A layer was refused or could not be read; ``str(err)`` says which entry and why.

    ``code`` is the gRPC status that fits: RESOURCE_EXHAUSTED over the size
    limit (or out of disk space), DATA_LOSS for a truncated or corrupt blob,
    FAILED_PRECONDITION for content this driver refuses to apply.
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> None:
        super().__init__(code, message)


class _StreamStopped(Exception):
    """The tar stream itself cannot go on; ``apply_layer`` adds where it stopped."""

    def __init__(self, reason: str, code: grpc.StatusCode) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def apply_layer(layer: BinaryIO, media_type: str, root_fd: int, *, max_bytes: int) -> int:
    """Apply the layer read from ``layer`` onto the directory open at ``root_fd``;
    return the bytes of file content written. Raises ``LayerError``."""
    stream = _BoundedStream(_decompressed(layer, media_type), max_bytes)
    extraction = _Extraction(root_fd, max_bytes)
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedHeader) as tar:
            extraction.apply_all(tar)
        stream.drain()  # trailing bytes count too, and gzip checks its CRC at the end
    except _StreamStopped as stop:
        raise LayerError(f"{stop.reason} ({extraction.where()})", stop.code) from None
    except tarfile.TarError as err:
        raise LayerError(f"layer is truncated or not a valid tar ({extraction.where()}): {err}",
                         grpc.StatusCode.DATA_LOSS) from None
    finally:
        extraction.close()
    return extraction.written


def _decompressed(layer: BinaryIO, media_type: str) -> _Readable:
    """The layer's tar stream. The media type must be a layer's; the bytes decide
    the compression, as registries hold images whose gzip layers are labelled
    plain and the other way round."""
    declared = _LAYER_MEDIA_TYPES.get(media_type.strip().lower())
    if declared is None:
        raise LayerError(f"blob of media type {media_type!r} is not an image layer tar; this driver applies "
                         f"only {', '.join(sorted(_LAYER_MEDIA_TYPES))}")
    head = _read_at_most(layer, len(ZSTD_MAGIC))
    if declared == "zstd" or head.startswith(ZSTD_MAGIC):
        raise LayerError(f"layer of media type {media_type!r} is zstd-compressed; zstd layers are not "
                         "supported: publish the image with gzip-compressed or uncompressed layers")
    source = _Prefixed(head, layer)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=source, mode="rb")
    return source


def _read_at_most(layer: BinaryIO, size: int) -> bytes:
    head = b""
    while len(head) < size:
        chunk = layer.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


class _Readable(Protocol):
    def read1(self, size: int = -1, /) -> bytes: ...


class _Prefixed:
    """``prefix`` (bytes already read from ``rest``), then ``rest``."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._prefix:
            taken = self._prefix if size < 0 else self._prefix[:size]
            self._prefix = self._prefix[len(taken):]
            return taken
        return self._rest.read(size)

    read1 = read

    def seek(self, pos: int, /) -> int:
        raise OSError(errno.ESPIPE, "a layer is read as a stream")


class _BoundedStream:
    """The uncompressed tar stream, refused past ``limit`` bytes; read errors of
    the blob or its compression become ``_StreamStopped``.

    tarfile reads ahead of the entry it parses, so a read returns what is at
    hand (``read1``) and fails only when the bytes asked for are needed: past
    the limit, or beyond the end of a truncated blob. The failure is then
    reported at the entry that needed them.
    """

    def __init__(self, source: _Readable, limit: int) -> None:
        self._source = source
        self._limit = limit
        self.position = 0

    def read(self, size: int = -1, /) -> bytes:
        allowed = self._limit - self.position
        if allowed <= 0:
            if self._read1(1):
                raise _StreamStopped(f"layer unpacks to more than {self._limit} bytes, the size limit",
                                     grpc.StatusCode.RESOURCE_EXHAUSTED)
            return b""
        data = self._read1(allowed if size < 0 else min(size, allowed))
        self.position += len(data)
        return data

    def _read1(self, size: int) -> bytes:
        try:
            return self._source.read1(size)
        except (EOFError, zlib.error, OSError) as err:  # gzip.BadGzipFile is an OSError
            raise _StreamStopped(f"layer is truncated or corrupt: {err}", grpc.StatusCode.DATA_LOSS) from None

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass

    def tell(self) -> int:
        return self.position

    def seek(self, pos: int, /) -> int:
        raise OSError(errno.ESPIPE, "a layer is read as a stream")

    def write(self, b: bytes, /) -> int:
        raise OSError(errno.EBADF, "a layer is read-only")

    def close(self) -> None:
        pass


class _CheckedHeader(tarfile.TarInfo):
    """A tar header, parsed strictly: tarfile takes a corrupt or cut header after
    the first as the end of the archive, which would apply half a layer."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            header = super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as err:
            if len(buf) == tarfile.BLOCKSIZE and not any(buf):
                raise  # the end-of-archive marker
            raise _StreamStopped(f"layer is truncated or corrupt: {err}", grpc.StatusCode.DATA_LOSS) from None
        if header.type in _METADATA_TYPES and header.size > MAX_METADATA:
            raise _StreamStopped(f"layer has a {header.size}-byte tar extended header; more than {MAX_METADATA} "
                                 "bytes are refused", grpc.StatusCode.FAILED_PRECONDITION)
        return header


_METADATA_TYPES = frozenset(
    (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK))
_REGULAR_TYPES = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE))
_REFUSED_TYPES = {
    tarfile.CHRTYPE: "character device nodes are not allowed in a library image",
    tarfile.BLKTYPE: "block device nodes are not allowed in a library image",
    tarfile.FIFOTYPE: "fifos are not allowed in a library image",
    tarfile.GNUTYPE_SPARSE: "sparse files are not supported",
}


def _entry_path(name: str, what: str = "name") -> Path:
    """The components of an entry's name; ``()`` is the root itself."""
    if not name:
        raise ValueError(f"empty {what}")
    if "\0" in name:
        raise ValueError(f"{what} contains a NUL byte")
    if name.startswith("/"):
        raise ValueError(f"absolute {what}; layer entries must be relative to the image root")
    if len(os.fsencode(name)) >= PATH_MAX:
        raise ValueError(f"{what} longer than {PATH_MAX - 1} bytes")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ValueError(f"'..' in the {what}; layer entries must stay inside the image root")
    return parts


def _check_symlink_target(link: Path, target: str) -> None:
    """Refuse a target that leads outside the root.

    An absolute target is taken relative to the root, as a container runtime
    resolves it inside the container (``/opt/datadog-packages/...`` is how a
    library names its own files once mounted), and kept as written: the driver
    never follows a link inside the tree. ``..`` may only lead a target: a
    ``..`` after a name could climb out through a link that name turns out to
    be, and with leading ``..`` alone every link resolves inside the root, link
    after link, for the pod and for anyone on the node reading relative links.
    """
    if not target or "\0" in target:
        raise ValueError(f"symlink target {target!r} is empty or contains a NUL byte")
    depth = 0 if target.startswith("/") else len(link) - 1  # of the directory it starts from
    parts = [part for part in target.split("/") if part not in ("", ".")]
    climbs = next((index for index, part in enumerate(parts) if part != ".."), len(parts))
    if ".." in parts[climbs:]:
        raise ValueError(f"symlink target {target!r} has '..' after a name; only leading '..' are accepted")
    if climbs > depth:
        raise ValueError(f"symlink target {target!r} leads outside the image root")


def _file_mode(tar_mode: int) -> int:
    # Ownership is not kept, so the tar's owner/group split means nothing here:
    # anyone may read, and run what the tar lets anyone run.
    return 0o755 if tar_mode & 0o111 else 0o644


def _mtime(member: tarfile.TarInfo) -> float:
    return float(min(max(member.mtime, 0), _LATEST_MTIME))


def _errno_code(err: OSError) -> grpc.StatusCode:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if err.errno in (errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM):
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.FAILED_PRECONDITION


class _Extraction:
    """One layer's entries applied in order onto the tree under ``root_fd``."""

    def __init__(self, root_fd: int, max_bytes: int) -> None:
        self.root_fd = root_fd
        self.max_bytes = max_bytes
        self.written = 0
        self.current: str | None = None  # the entry being applied
        self.last: str | None = None  # the last entry applied
        self.unpacked: set[Path] = set()  # entries of this layer (whiteouts spare them)
        self.ancestors: set[Path] = set()  # their parent directories
        self._cached: tuple[Path, int] | None = None  # see _parent
        self._handlers: dict[bytes, Callable[[tarfile.TarFile, tarfile.TarInfo, Path], None]] = {
            tarfile.DIRTYPE: self._directory,
            tarfile.SYMTYPE: self._symlink,
            tarfile.LNKTYPE: self._hard_link,
            **dict.fromkeys(_REGULAR_TYPES, self._regular_file),
        }

    def where(self) -> str:
        if self.current is not None:
            return f"in entry {self.current!r}"
        return f"after entry {self.last!r}" if self.last is not None else "before its first entry"

    def apply_all(self, tar: tarfile.TarFile) -> None:
        while (member := tar.next()) is not None:
            # tarfile keeps every header it read (undeclared in its stubs); a stream needs none
            tar.members.clear()  # type: ignore[attr-defined]
            self.current = member.name
            try:
                self._apply(tar, member)
            except ValueError as err:
                raise LayerError(f"layer entry {member.name!r}: {err}") from None
            except OSError as err:
                raise LayerError(f"layer entry {member.name!r}: {err.strerror or err}", _errno_code(err)) from None
            self.current, self.last = None, member.name

    def _apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = _entry_path(member.name)
        if path and path[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(path)
            return
        if member.type in _REFUSED_TYPES or member.issparse():
            raise ValueError(_REFUSED_TYPES.get(member.type, _REFUSED_TYPES[tarfile.GNUTYPE_SPARSE]))
        handler = self._handlers.get(member.type)
        if handler is None:
            raise ValueError(f"unsupported tar entry type {member.type!r}")
        if not path:
            if member.isdir():
                return  # "./": the root is the caller's directory and keeps its mode
            raise ValueError("a non-directory entry for the image root")
        handler(tar, member, path)
        self.unpacked.add(path)
        self.ancestors.update(path[:depth] for depth in range(1, len(path)))

    # Entries -------------------------------------------------------------

    def _directory(self, _tar: tarfile.TarFile, _member: tarfile.TarInfo, path: Path) -> None:
        parent_fd = self._parent(path)
        if not _is_directory(parent_fd, path[-1]):
            self._remove(parent_fd, path)
            os.close(_make_directory(parent_fd, path[-1]))

    def _regular_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
        if member.offset_data + member.size > self.max_bytes:
            raise LayerError(f"layer entry {member.name!r} ({member.size} bytes) takes the layer past its "
                             f"size limit of {self.max_bytes} bytes", grpc.StatusCode.RESOURCE_EXHAUSTED)
        content = tar.extractfile(member)
        assert content is not None  # a regular file always has content
        parent_fd = self._parent(path)
        self._remove(parent_fd, path)
        fd = os.open(path[-1], _FILE_FLAGS, 0o600, dir_fd=parent_fd)
        try:
            while chunk := content.read(_COPY_CHUNK):
                _write_all(fd, chunk)
            os.fchmod(fd, _file_mode(member.mode))
            os.utime(fd, (_mtime(member), _mtime(member)))
        finally:
            os.close(fd)
        self.written += member.size

    def _symlink(self, _tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
        _check_symlink_target(path, member.linkname)
        parent_fd = self._parent(path)
        self._remove(parent_fd, path)
        os.symlink(member.linkname, path[-1], dir_fd=parent_fd)
        os.utime(path[-1], (_mtime(member), _mtime(member)), dir_fd=parent_fd, follow_symlinks=False)

    def _hard_link(self, _tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
        source = _entry_path(member.linkname, "hard link target")
        with self._existing_directory(source[:-1]) as source_parent_fd:
            if source_parent_fd is None or not source or not _is_regular(source_parent_fd, source[-1]):
                raise ValueError(f"hard link target {member.linkname!r} is not a regular file of the image")
            if source == path:
                return
            parent_fd = self._parent(path)
            self._remove(parent_fd, path)
            os.link(source[-1], path[-1], src_dir_fd=source_parent_fd, dst_dir_fd=parent_fd, follow_symlinks=False)

    def _whiteout(self, path: Path) -> None:
        if path[-1] == OPAQUE_WHITEOUT:
            self._empty_directory(path[:-1])
            return
        if path[-1].startswith(WHITEOUT_PREFIX * 2):
            return  # other ".wh..wh." names are an old storage driver's bookkeeping, not whiteouts
        hidden = path[:-1] + (path[-1][len(WHITEOUT_PREFIX):],)
        if hidden[-1] in ("", ".", ".."):
            raise ValueError("whiteout of no file")
        if hidden in self.unpacked:
            return
        if hidden in self.ancestors:
            self._empty_directory(hidden)  # this layer wrote below it: only lower content goes
            return
        with self._existing_directory(hidden[:-1]) as parent_fd:
            if parent_fd is not None:
                self._remove(parent_fd, hidden)

    def _empty_directory(self, directory: Path) -> None:
        """Remove lower-layer content under ``directory``, sparing this layer's entries."""
        with self._existing_directory(directory) as top_fd:
            if top_fd is None:
                return
            pending = [(os.dup(top_fd), directory)]
        try:
            while pending:
                dir_fd, dir_path = pending.pop()
                try:
                    with os.scandir(dir_fd) as children:
                        names = [child.name for child in children]
                    for name in names:
                        child = dir_path + (name,)
                        if child not in self.unpacked and child not in self.ancestors:
                            self._remove(dir_fd, child)
                        elif _is_directory(dir_fd, name):
                            pending.append((os.open(name, _DIR_FLAGS, dir_fd=dir_fd), child))
                finally:
                    os.close(dir_fd)
        finally:
            for dir_fd, _ in pending:
                os.close(dir_fd)

    def _remove(self, parent_fd: int, path: Path) -> None:
        """Remove whatever is at ``path`` (a directory with all it holds) from
        ``parent_fd``, its parent, without following symlinks; nothing there is fine."""
        mode = _lstat_mode(parent_fd, path[-1])
        if stat.S_ISDIR(mode):
            if self._cached is not None and self._cached[0][:len(path)] == path:
                # Whiteouts spare this layer's directories, the cached one among them;
                # this keeps a stale descriptor out of use should that ever change.
                self.close()
            shutil.rmtree(path[-1], dir_fd=parent_fd)
        elif mode:
            os.unlink(path[-1], dir_fd=parent_fd)

    # Walking -------------------------------------------------------------

    def _parent(self, path: Path) -> int:
        """The directory to hold ``path``'s last component, created if missing.

        The last one is kept open (entries come directory by directory) until
        a removal could take it away; the descriptor is the extraction's."""
        directory = path[:-1]
        if self._cached is None or self._cached[0] != directory:
            fd = self._walk(directory, create=True)
            self.close()
            self._cached = (directory, fd)
        return self._cached[1]

    @contextmanager
    def _existing_directory(self, directory: Path) -> Iterator[int | None]:
        """``directory`` opened, or None when it does not exist."""
        fd = self._walk(directory, create=False)
        try:
            yield fd if fd >= 0 else None
        finally:
            if fd >= 0:
                os.close(fd)

    def _walk(self, directory: Path, *, create: bool) -> int:
        """``directory`` (below the root) opened without following symlinks;
        missing directories are created (``create``) or give -1."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.root_fd)
        try:
            for depth, name in enumerate(directory, start=1):
                next_fd = _open_directory(fd, name, directory[:depth], create)
                os.close(fd)
                fd = next_fd
                if fd < 0:
                    break
            return fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None


def _open_directory(parent_fd: int, name: str, walked: Path, create: bool) -> int:
    """``name`` under ``parent_fd`` opened as a directory, never through a
    symlink; -1 when it does not exist and ``create`` is false."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            return -1
        return _make_directory(parent_fd, name)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        kind = "a symlink" if stat.S_ISLNK(_lstat_mode(parent_fd, name)) else "not a directory"
        raise ValueError(f"{'/'.join(walked)} is {kind} in the image; entries are never written through "
                         "symlinks or below non-directories") from None


def _make_directory(parent_fd: int, name: str) -> int:
    """Create directory ``name`` and return it opened."""
    os.mkdir(name, _DIR_MODE, dir_fd=parent_fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        os.fchmod(fd, _DIR_MODE)  # whatever the umask
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _lstat_mode(parent_fd: int, name: str) -> int:
    """The entry's mode, 0 when it does not exist."""
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return 0


def _is_directory(parent_fd: int, name: str) -> bool:
    return stat.S_ISDIR(_lstat_mode(parent_fd, name))


def _is_regular(parent_fd: int, name: str) -> bool:
    return stat.S_ISREG(_lstat_mode(parent_fd, name))
