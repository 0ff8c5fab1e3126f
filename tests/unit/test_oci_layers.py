"""Applying image layers: OCI semantics on ordinary layers, and hostile layers
refused at the offending entry with nothing written outside the root.

Layers are built in memory with tarfile and applied into a directory under
tmp_path; a sentinel directory beside that root shows whether anything leaked.
"""

from __future__ import annotations

import gc
import gzip
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from csi_driver.oci.layers import MAX_METADATA, LayerError, apply_layer

TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LIMIT = 64 << 20
MTIME = 1_700_000_000


# Building layers -------------------------------------------------------------

Entry = tuple[tarfile.TarInfo, bytes]


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int | None = None,
          link: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
    info.linkname = link
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    info.mtime = MTIME
    info.uid = info.gid = 1000
    return info, data


def file(name: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    return entry(name, data=data, mode=mode)


def directory(name: str, mode: int = 0o755) -> Entry:
    return entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Entry:
    return entry(name, tarfile.SYMTYPE, link=target)


def hard_link(name: str, target: str) -> Entry:
    return entry(name, tarfile.LNKTYPE, link=target)


def layer(*entries: Entry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# The root and what surrounds it ----------------------------------------------


@dataclass
class Scratch:
    root: str
    sentinel: str  # beside root: no layer may reach it
    root_fd: int

    def apply(self, data: bytes, media_type: str = TAR, max_bytes: int = LIMIT) -> int:
        return apply_layer(io.BytesIO(data), media_type, self.root_fd, max_bytes=max_bytes)

    def refuse(self, data: bytes, media_type: str = TAR, max_bytes: int = LIMIT,
               code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> str:
        with pytest.raises(LayerError) as refused:
            self.apply(data, media_type, max_bytes)
        assert refused.value.code == code, refused.value.message
        assert str(refused.value) == refused.value.message
        return refused.value.message

    def tree(self) -> dict[str, object]:
        return snapshot(self.root)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)


def snapshot(top: str, skip: str = "") -> dict[str, object]:
    """Every path under ``top`` with its type and content (never following links)."""
    found: dict[str, object] = {}
    for current, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(current, d) != skip]
        for name in dirs + files:
            path = os.path.join(current, name)
            relative = os.path.relpath(path, top)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[relative] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as content:
                    found[relative] = ("file", stat.S_IMODE(st.st_mode), st.st_nlink, content.read())
    return found


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def scratch(tmp_path) -> Iterator[Scratch]:
    root, sentinel = tmp_path / "root", tmp_path / "sentinel"
    root.mkdir()
    sentinel.mkdir()
    (sentinel / "file").write_bytes(b"untouched")
    gc.collect()  # files an earlier test dropped unclosed are closed now, not during this one
    fds_before = open_fds()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    outside = snapshot(str(tmp_path), skip=str(root))
    try:
        yield Scratch(str(root), str(sentinel), root_fd)
    finally:
        os.close(root_fd)
    # Nothing outside the root changed, and no descriptor was left open, whatever the test did.
    assert snapshot(str(tmp_path), skip=str(root)) == outside
    assert open_fds() - fds_before == set()


# Ordinary layers -------------------------------------------------------------


def test_a_tree_of_directories_files_and_links(scratch):
    written = scratch.apply(layer(
        directory("datadog-init"),
        directory("datadog-init/package"),
        file("datadog-init/package/lib.so", b"ELF" * 100, 0o755),
        file("datadog-init/package/README", b"read me"),
        symlink("datadog-init/package/current", "lib.so"),
        symlink("datadog-init/package/abs", "/opt/datadog-packages/datadog-apm-inject/stable/inject"),
        symlink("datadog-init/package/up", "../../datadog-init/package/README"),
        hard_link("datadog-init/package/README.hard", "datadog-init/package/README"),
        file("implicit/parents/made.txt", b"x"),
    ))
    assert written == 300 + 7 + 1
    assert scratch.tree() == {
        "datadog-init": ("dir", 0o755),
        "datadog-init/package": ("dir", 0o755),
        "datadog-init/package/lib.so": ("file", 0o755, 1, b"ELF" * 100),
        "datadog-init/package/README": ("file", 0o644, 2, b"read me"),
        "datadog-init/package/README.hard": ("file", 0o644, 2, b"read me"),
        "datadog-init/package/current": ("link", "lib.so"),
        "datadog-init/package/abs": ("link", "/opt/datadog-packages/datadog-apm-inject/stable/inject"),
        "datadog-init/package/up": ("link", "../../datadog-init/package/README"),
        "implicit": ("dir", 0o755),
        "implicit/parents": ("dir", 0o755),
        "implicit/parents/made.txt": ("file", 0o644, 1, b"x"),
    }
    readme = os.lstat(scratch.path("datadog-init/package/README"))
    assert readme.st_ino == os.lstat(scratch.path("datadog-init/package/README.hard")).st_ino
    assert readme.st_mtime == MTIME
    assert readme.st_uid == os.getuid()  # never the tar's owner


def test_dot_slash_names_and_a_root_entry(scratch):
    root_mode = stat.S_IMODE(os.stat(scratch.root).st_mode)
    scratch.apply(layer(directory(".", 0o777), directory("./a"), file("./a/b", b"1"), file("a//c/", b"2")))
    assert scratch.tree() == {"a": ("dir", 0o755), "a/b": ("file", 0o644, 1, b"1"), "a/c": ("file", 0o644, 1, b"2")}
    assert stat.S_IMODE(os.stat(scratch.root).st_mode) == root_mode


def test_long_names_through_pax_and_gnu_headers(scratch):
    deep = "/".join(["d" * 60] * 5) + "/" + "f" * 200
    scratch.apply(layer(file(deep, b"pax"), symlink("l" * 150, deep)))
    scratch.apply(layer(file(deep + "2", b"gnu"), fmt=tarfile.GNU_FORMAT))
    tree = scratch.tree()
    assert tree[deep] == ("file", 0o644, 1, b"pax") and tree[deep + "2"] == ("file", 0o644, 1, b"gnu")
    assert tree["l" * 150] == ("link", deep)


def test_modes_are_normalised_and_special_bits_dropped(scratch):
    scratch.apply(layer(
        file("setuid", b"#!", 0o4755), file("setgid", b"#!", 0o2711), file("private", b"s", 0o600),
        file("world-writable", b"w", 0o666), file("owner-exec", b"x", 0o700),
        directory("sticky", 0o1777), directory("closed", 0o700),
    ))
    tree = scratch.tree()
    assert {name: value[1] for name, value in tree.items()} == {
        "setuid": 0o755, "setgid": 0o755, "private": 0o644, "world-writable": 0o644, "owner-exec": 0o755,
        "sticky": 0o755, "closed": 0o755,
    }
    for name in tree:
        assert not os.lstat(scratch.path(name)).st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)


@pytest.mark.parametrize(("media_type", "compress"), [
    (TAR_GZIP, True), (DOCKER_GZIP, True), ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", True),
    # Mislabelled blobs exist in real registries: the bytes decide the compression.
    (TAR, True), (DOCKER_GZIP, False),
])
def test_gzip_layers_are_recognised_by_their_bytes(scratch, media_type, compress):
    data = layer(directory("d"), file("d/f", b"z" * 5000))
    assert scratch.apply(gzipped(data) if compress else data, media_type) == 5000
    assert scratch.tree()["d/f"] == ("file", 0o644, 1, b"z" * 5000)


def test_the_layer_is_read_once_as_a_stream(scratch):
    """Nothing seeks back: a pipe-like source that only reads is enough."""

    class ReadOnce(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self.data.read(min(len(buffer), 777))  # short reads, as from a socket
            buffer[:len(chunk)] = chunk
            return len(chunk)

        def seekable(self) -> bool:
            return False

    data = gzipped(layer(file("a", os.urandom(300_000)), file("b", b"b")))
    assert apply_layer(ReadOnce(data), TAR_GZIP, scratch.root_fd, max_bytes=LIMIT) == 300_001


def test_an_empty_layer_is_fine(scratch):
    assert scratch.apply(layer()) == 0
    assert scratch.apply(gzipped(layer()), TAR_GZIP) == 0
    assert scratch.tree() == {}


@pytest.mark.parametrize(("media_type", "data", "says"), [
    (TAR_ZSTD, b"\x28\xb5\x2f\xfd" + b"\0" * 64, "zstd layers are not supported"),
    (TAR, b"\x28\xb5\x2f\xfd" + b"\0" * 64, "zstd layers are not supported"),
    ("application/vnd.oci.image.config.v1+json", b"{}", "is not an image layer tar"),
    ("application/vnd.oci.image.layer.v1.tar+bzip2", b"BZh", "is not an image layer tar"),
])
def test_unsupported_blobs_are_refused_by_name(scratch, media_type, data, says):
    message = scratch.refuse(data, media_type)
    assert says in message and media_type in message
    assert scratch.tree() == {}


# Several layers --------------------------------------------------------------


def lower_tree(scratch: Scratch) -> None:
    scratch.apply(layer(
        directory("etc"), file("etc/keep", b"k"), file("etc/gone", b"g"),
        directory("lib"), directory("lib/sub"), file("lib/sub/old", b"o"), file("lib/top", b"t"),
        directory("opaque"), directory("opaque/nested"), file("opaque/nested/old", b"o"), file("opaque/old", b"o"),
        file("becomes-dir", b"f"), directory("becomes-file"), file("becomes-file/inner", b"i"),
        symlink("link-becomes-file", "/etc/keep"),
    ))


def test_whiteouts_remove_lower_entries_and_are_never_written(scratch):
    lower_tree(scratch)
    scratch.apply(layer(file("etc/.wh.gone"), file(".wh.lib"), file("etc/.wh.never-existed"),
                        file("missing-dir/.wh.anything")))
    tree = scratch.tree()
    assert "etc/gone" not in tree and "etc/keep" in tree
    assert not any(name.startswith("lib") for name in tree)
    assert not any(".wh." in name for name in tree)
    assert "missing-dir" not in tree


def test_an_opaque_directory_keeps_only_this_layers_entries(scratch):
    lower_tree(scratch)
    scratch.apply(layer(
        directory("opaque"), file("opaque/.wh..wh..opq"), file("opaque/new", b"n"),
        # Entries of this layer that come before the marker are spared too.
        file("lib/sub/new", b"n"), file("lib/.wh..wh..opq"),
    ))
    tree = scratch.tree()
    assert sorted(name for name in tree if name.startswith(("opaque", "lib"))) == [
        "lib", "lib/sub", "lib/sub/new", "opaque", "opaque/new"]
    assert not any(".wh." in name for name in tree)


def test_a_whiteout_spares_entries_of_its_own_layer(scratch):
    lower_tree(scratch)
    scratch.apply(layer(file("etc/gone", b"again"), file("etc/.wh.gone"),
                        file("lib/sub/new", b"n"), file(".wh.lib"), file("lib/after", b"a")))
    tree = scratch.tree()
    assert tree["etc/gone"] == ("file", 0o644, 1, b"again")
    assert sorted(name for name in tree if name.startswith("lib")) == ["lib", "lib/after", "lib/sub", "lib/sub/new"]


def test_later_entries_replace_earlier_ones_of_any_type(scratch):
    lower_tree(scratch)
    scratch.apply(layer(
        directory("becomes-dir"), file("becomes-dir/inside", b"i"),
        file("becomes-file", b"now a file"),
        file("link-becomes-file", b"plain"),
        symlink("etc/keep", "gone"),
        directory("lib"),  # a directory over a directory merges
    ))
    tree = scratch.tree()
    assert tree["becomes-dir"] == ("dir", 0o755) and tree["becomes-dir/inside"][0] == "file"
    assert tree["becomes-file"] == ("file", 0o644, 1, b"now a file") and "becomes-file/inner" not in tree
    assert tree["link-becomes-file"] == ("file", 0o644, 1, b"plain")
    assert tree["etc/keep"] == ("link", "gone")
    assert tree["lib/sub/old"][0] == "file"


def test_a_directory_replaced_mid_layer_is_not_written_into(scratch):
    """Entries after a replaced directory land in its successor, not in the
    directory that was removed (nor through the link that replaced it)."""
    scratch.apply(layer(file("d/x", b"1"), file("d", b"now a file"), directory("d"), file("d/y", b"2")))
    assert scratch.tree() == {"d": ("dir", 0o755), "d/y": ("file", 0o644, 1, b"2")}
    message = scratch.refuse(layer(file("e/x", b"1"), symlink("e", "d"), file("e/z", b"3")))
    assert "layer entry 'e/z'" in message and "e is a symlink" in message
    assert scratch.tree()["d"] == ("dir", 0o755) and "d/z" not in scratch.tree()


def test_a_file_replacing_a_symlink_does_not_write_through_it(scratch):
    scratch.apply(layer(symlink("f", os.path.join(scratch.sentinel, "file"))))
    scratch.apply(layer(file("f", b"replaced")))
    assert scratch.tree() == {"f": ("file", 0o644, 1, b"replaced")}


def test_a_hard_link_to_a_lower_layers_file(scratch):
    scratch.apply(layer(file("a", b"content")))
    assert scratch.apply(layer(hard_link("b", "a"), hard_link("a", "a"))) == 0
    assert os.lstat(scratch.path("a")).st_ino == os.lstat(scratch.path("b")).st_ino


# Hostile layers --------------------------------------------------------------


def sentinel_path(scratch: Scratch, name: str = "pwned") -> str:
    return os.path.join(scratch.sentinel, name)


HOSTILE_NAMES = [
    ("../sentinel/pwned", "'..'"),
    ("a/../../sentinel/pwned", "'..'"),
    ("a/..", "'..'"),
    ("", "empty name"),
]


@pytest.mark.parametrize(("name", "says"), HOSTILE_NAMES)
@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE])
def test_names_leaving_the_root_are_refused(scratch, name, says, kind):
    message = scratch.refuse(layer(file("before", b"1"), entry(name, kind, link="x"), file("after", b"2")))
    assert f"layer entry {name!r}" in message and says in message
    assert "after" not in scratch.tree()


def test_absolute_names_are_refused(scratch):
    for kind in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE):
        name = sentinel_path(scratch)
        message = scratch.refuse(layer(entry(name, kind, link="x", data=b"")))
        assert f"layer entry {name!r}" in message and "absolute" in message
    assert scratch.tree() == {}


def test_whiteouts_cannot_reach_outside_the_root(scratch):
    for name in ("../sentinel/.wh.file", "a/../../sentinel/.wh.file", sentinel_path(scratch, ".wh.file"), ".wh..."):
        message = scratch.refuse(layer(file(name)))
        assert f"layer entry {name!r}" in message


@pytest.mark.parametrize(("name", "target"), [
    ("escape", "../sentinel"),
    ("a/b/escape", "../../../sentinel/file"),
    ("down-and-up", "a/../../sentinel"),
    ("abs-up", "/../sentinel"),
    ("named-then-up", "a/../b"),  # could climb out if "a" were a link
    ("empty", ""),
])
def test_symlinks_leading_outside_are_refused(scratch, name, target):
    message = scratch.refuse(layer(directory("a"), directory("a/b"), symlink(name, target), file("after")))
    assert f"layer entry {name!r}" in message and repr(target) in message
    assert name not in scratch.tree() and "after" not in scratch.tree()


@pytest.mark.parametrize("across_layers", [False, True])
@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_nothing_is_written_through_a_symlink(scratch, across_layers, kind):
    """An absolute link is legitimate (the pod resolves it in its own root) but
    the driver never follows it, even to write inside the root."""
    links = [symlink("to-sentinel", scratch.sentinel), directory("real"), symlink("to-real", "real"),
             file("real/file", b"r")]
    name = "to-sentinel/file" if kind != tarfile.DIRTYPE else "to-sentinel/dir"
    writes = [entry(name, kind, data=b"pwned", link="real/file"), entry("to-real/x", kind, link="real/file")]
    if across_layers:
        scratch.apply(layer(*links))
        links = []
    for hostile in writes:
        message = scratch.refuse(layer(*links, hostile))
        assert f"layer entry {hostile[0].name!r}" in message and "is a symlink" in message
    assert os.listdir(scratch.path("real")) == ["file"]
    assert os.readlink(scratch.path("to-sentinel")) == scratch.sentinel


def test_whiteouts_do_not_follow_symlinks(scratch):
    scratch.apply(layer(symlink("to-sentinel", scratch.sentinel)))
    message = scratch.refuse(layer(file("to-sentinel/.wh.file")))
    assert "'to-sentinel/.wh.file'" in message and "is a symlink" in message
    message = scratch.refuse(layer(file("to-sentinel/.wh..wh..opq")))
    assert "'to-sentinel/.wh..wh..opq'" in message and "is a symlink" in message
    scratch.apply(layer(file(".wh.to-sentinel")))  # removes the link itself, not what it points to
    assert scratch.tree() == {}


@pytest.mark.parametrize(("target", "says"), [
    ("../sentinel/file", "'..'"),
    ("a/../../sentinel/file", "'..'"),
    ("/SENTINEL/file", "absolute"),
    ("missing", "not a regular file"),
    ("dir", "not a regular file"),
    ("link-to-sentinel-file", "not a regular file"),
    ("link-to-dir/file", "is a symlink"),
    ("", "empty"),
])
def test_hard_links_must_name_a_regular_file_inside(scratch, target, says):
    target = target.replace("/SENTINEL", scratch.sentinel)
    lower = layer(directory("dir"), file("dir/file", b"in"), symlink("link-to-dir", "dir"),
                  symlink("link-to-sentinel-file", sentinel_path(scratch, "file")))
    scratch.apply(lower)
    message = scratch.refuse(layer(hard_link("h", target)))
    assert "layer entry 'h'" in message and says in message
    assert "h" not in scratch.tree()
    assert os.stat(sentinel_path(scratch, "file")).st_nlink == 1


@pytest.mark.parametrize(("kind", "says"), [
    (tarfile.CHRTYPE, "device nodes are not allowed"),
    (tarfile.BLKTYPE, "device nodes are not allowed"),
    (tarfile.FIFOTYPE, "fifos are not allowed"),
    (b"V", "unsupported tar entry type"),
])
def test_special_files_are_refused(scratch, kind, says):
    special = entry("dev/node", kind)
    special[0].devmajor, special[0].devminor = 1, 3  # /dev/null's numbers
    message = scratch.refuse(layer(directory("dev"), special))
    assert "layer entry 'dev/node'" in message and says in message
    assert scratch.tree() == {"dev": ("dir", 0o755)}


def test_sparse_files_are_refused(scratch):
    sparse = entry("holes", tarfile.GNUTYPE_SPARSE)
    message = scratch.refuse(layer(sparse, fmt=tarfile.GNU_FORMAT))
    assert "layer entry 'holes'" in message and "sparse" in message


def test_a_file_past_the_limit_is_refused_before_it_is_written(scratch):
    data = layer(file("small", b"s" * 1000), file("big", b"b" * 20_000), file("after", b"a"))
    message = scratch.refuse(data, max_bytes=10_000, code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "layer entry 'big'" in message and "10000" in message
    assert scratch.tree() == {"small": ("file", 0o644, 1, b"s" * 1000)}
    assert scratch.apply(data, max_bytes=len(data)) == 21_001  # the whole tar stream fits: applied


def test_metadata_headers_are_bounded(scratch):
    huge = file("f")
    huge[0].pax_headers = {"comment": "c" * (MAX_METADATA + 1)}
    message = scratch.refuse(layer(file("first"), huge))
    assert "extended header" in message and "after entry 'first'" in message
    assert scratch.tree() == {"first": ("file", 0o644, 1, b"")}


@pytest.mark.parametrize(("end", "where"), [
    (512 + 512 + 512 + 2000, "in entry 'b'"),  # in the middle of b's content
    (512 + 512 + 100, "after entry 'a'"),  # in the middle of b's header
    (512 + 512, "after entry 'a'"),  # right after an entry: no end-of-archive marker
])
@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_layers_are_refused(scratch, end, where, compressed):
    data = layer(file("a", b"a" * 512), file("b", b"b" * 4096), fmt=tarfile.USTAR_FORMAT)
    blob = gzipped(data[:end]) if compressed else data[:end]
    message = scratch.refuse(blob, TAR_GZIP if compressed else TAR, code=grpc.StatusCode.DATA_LOSS)
    assert "truncated" in message and where in message


def test_a_truncated_gzip_stream_is_refused(scratch):
    blob = gzipped(layer(file("a", os.urandom(8192))))
    message = scratch.refuse(blob[:len(blob) // 2], TAR_GZIP, code=grpc.StatusCode.DATA_LOSS)
    assert "truncated" in message and "in entry 'a'" in message


def test_a_corrupt_header_mid_layer_is_not_taken_for_the_end(scratch):
    data = bytearray(layer(file("a", b"a"), file("b", b"b")))
    data[1024 + 148] ^= 0x01  # b's header checksum
    message = scratch.refuse(bytes(data), code=grpc.StatusCode.DATA_LOSS)
    assert "after entry 'a'" in message and "bad checksum" in message


def test_a_corrupt_gzip_stream_is_refused(scratch):
    blob = bytearray(gzipped(layer(file("a", os.urandom(4096)))))
    blob[-6] ^= 0xFF  # the CRC, checked only once the stream is read to its end
    message = scratch.refuse(bytes(blob), TAR_GZIP, code=grpc.StatusCode.DATA_LOSS)
    assert "corrupt" in message
    assert scratch.refuse(b"\x1f\x8b" + b"garbage" * 10, TAR_GZIP, code=grpc.StatusCode.DATA_LOSS)
    assert scratch.refuse(b"", TAR, code=grpc.StatusCode.DATA_LOSS)


# Bombs: endless gzip streams made as they are read ------------------------------


class EndlessGzip:
    """A gzip stream of tar bytes from ``blocks``, compressed only as it is read;
    counts the compressed bytes handed out."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self._pending = b""
        self.compressed_read = 0
        self.uncompressed_made = 0

    def read(self, size: int = -1) -> bytes:
        size = size if size >= 0 else 1 << 16
        while not self._pending:
            block = next(self._blocks)
            self.uncompressed_made += len(block)
            self._pending = self._compressor.compress(block)
        chunk, self._pending = self._pending[:size], self._pending[size:]
        self.compressed_read += len(chunk)
        return chunk


def header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def zeros_forever() -> Iterator[bytes]:
    while True:
        yield bytes(1 << 20)


def one_huge_file() -> Iterator[bytes]:
    yield header("bomb", 1 << 40)
    yield from zeros_forever()


def endless_files(size: int) -> Iterator[bytes]:
    index = 0
    while True:
        yield header(f"f{index:06}", size)
        yield bytes(size)
        index += 1


def test_a_bomb_declaring_a_huge_file_stops_at_its_header(scratch):
    bomb = EndlessGzip(one_huge_file())
    with pytest.raises(LayerError) as refused:
        apply_layer(bomb, TAR_GZIP, scratch.root_fd, max_bytes=8 << 20)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "layer entry 'bomb' (1099511627776 bytes)" in refused.value.message
    assert scratch.tree() == {}
    assert bomb.uncompressed_made < 64 << 20


def test_a_bomb_of_many_files_stops_at_the_limit(scratch):
    bomb = EndlessGzip(endless_files(1 << 20))
    limit = 8 << 20
    with pytest.raises(LayerError) as refused:
        apply_layer(bomb, TAR_GZIP, scratch.root_fd, max_bytes=limit)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "layer entry 'f000007'" in refused.value.message  # 7 files and their headers fit in 8 MiB
    written = sum(os.path.getsize(scratch.path(name)) for name in os.listdir(scratch.root))
    assert written == 7 << 20 and len(os.listdir(scratch.root)) == 7
    assert bomb.uncompressed_made < 64 << 20


def test_a_bomb_of_empty_entries_stops_at_the_limit(scratch):
    """Headers alone count: a flood of empty files is bounded like content."""
    bomb = EndlessGzip(endless_files(0))
    limit = 1 << 20
    with pytest.raises(LayerError) as refused:
        apply_layer(bomb, TAR_GZIP, scratch.root_fd, max_bytes=limit)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"more than {limit} bytes" in refused.value.message and "entry 'f0" in refused.value.message
    assert len(os.listdir(scratch.root)) <= limit // 512
    assert bomb.uncompressed_made < 64 << 20
