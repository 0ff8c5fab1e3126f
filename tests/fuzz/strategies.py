"""Hypothesis strategies for hostile CSI requests.

Each request field is drawn either from values a kubelet would send (so the
fuzzer reaches the code that mounts) or from hostile ones: NUL bytes,
components longer than NAME_MAX, paths longer than PATH_MAX, ``.``, ``..``,
``//``, symlinks planted in the kubelet tree, paths near or outside the pods
directory, unknown volume types, oversized maps. ``publish_requests`` picks a
few fields to make hostile and keeps the others valid, so every field is
fuzzed while most requests still get deep into the driver.
"""

from __future__ import annotations

import hashlib
import os

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

from csi_driver.csi.v1 import csi_pb2
from csi_driver.sandbox import kubelet
from csi_driver.volumes import sockets
from fuzz.harness import CSI, Layout

_Cap = csi_pb2.VolumeCapability
_Mode = _Cap.AccessMode
TYPES = (*sockets.TYPES, sockets.DEPRECATED_SOCKETS_DIRECTORY)
VOLUME_IDS = tuple("csi-" + hashlib.sha256(name.encode()).hexdigest() for name in ("x", "y", "z"))
POD_INFO = dict(zip(kubelet.POD_INFO_KEYS, ("app", "default", "good", "default", "true"), strict=False))
PUBLISH_FIELDS = ("volume_id", "target_path", "volume_capability", "volume_context",
                  "publish_context", "secrets", "staging_target_path")

text = st.text(max_size=24)
nul_text = st.builds(lambda a, b: a + "\0" + b, st.text(max_size=8), st.text(max_size=8))
long_name = st.integers(256, 300).map(lambda n: "n" * n)
# Multi-byte characters: short in characters, long in bytes.
wide_text = st.integers(30, 70).map(lambda n: "\u00e9\u4e2d" * n)


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy, coins: int = 3
           ) -> st.SearchStrategy:
    """``hostile`` once in 2**coins draws, else ``valid``; shrinks towards ``valid``.

    (Fair coins, because Hypothesis draws integers with a bias towards their
    bounds, which would make "one in five" far more often than that.)
    """
    return st.lists(st.booleans(), min_size=coins, max_size=coins).flatmap(
        lambda flips: hostile if all(flips) else valid)


def hostile_component() -> st.SearchStrategy[str]:
    return st.one_of(text, st.sampled_from([".", "..", "", " ", "mount/", "\n", "\\"]),
                     nul_text, long_name, wide_text)


def component(pool: tuple[str, ...]) -> st.SearchStrategy[str]:
    return mostly(st.sampled_from(pool), hostile_component())


def valid_targets(layout: Layout) -> st.SearchStrategy[str]:
    """Targets a publish can succeed at: kubelet-shaped, no traps on the way,
    the leaf missing or an empty file or directory."""
    return st.sampled_from([layout.target("good", vol, "mount") for vol in "abc"] + [
        layout.target("good", "a", "other"), layout.target("good", "odd", "mount"),
        layout.target("good", "odd", "empty-dir"), layout.target("good", "odd", "empty-file")])


def trap_targets(layout: Layout) -> st.SearchStrategy[str]:
    """Kubelet-shaped targets whose path crosses one of the planted traps:
    a symlink out (absolute or relative), a symlink loop, a file where a
    directory belongs, or an existing leaf of every kind."""
    traps = [layout.target(pod, volume, leaf)
             for pod, volume in (("link-pod", "vol"), ("vlink", "vol"), ("clink", "vol"),
                                 ("good", "to-outside"), ("good", "rel-outside"),
                                 ("good", "to-inside"), ("notdir", "a"), ("loop", "a"),
                                 ("missing-pod", "a"), ("good", "missing"))
             for leaf in ("mount", "vol_data.json")]
    traps += [layout.target("good", "odd", leaf) for leaf in Layout.LEAVES]
    return st.sampled_from(traps)


@st.composite
def target_paths(draw, layout: Layout) -> str:
    shape = draw(st.integers(0, 9))
    if shape == 9:
        return draw(valid_targets(layout))
    if shape < 3:
        return draw(trap_targets(layout))
    if shape == 8:
        return draw(text)
    if shape == 7:  # longer than PATH_MAX, by one long name or by many short ones
        base = layout.target("good", "a", "")
        return draw(st.one_of(
            st.integers(3900, 5000).map(lambda n: base + "m" * n),
            st.integers(900, 1100).map(lambda n: base + "a/" * n + "mount"),
            st.integers(2000, 2100).map(lambda n: base + "./" * n + "mount")))
    near = [layout.kubelet_root, layout.outside, "/", layout.pods_dir + "-shadow",
            layout.pods_dir + "/", "", "pods", "relative/" + layout.pods_dir,
            "/" + layout.pods_dir, layout.pods_dir + "/..", layout.pods_dir + "/."]
    prefix = draw(mostly(st.just(layout.pods_dir), st.sampled_from(near)))
    parts = [draw(component(Layout.PODS)),
             draw(component(("volumes",))),
             draw(component((CSI, "kubernetes.io~empty-dir"))),
             draw(component(Layout.VOLUMES)),
             draw(component(Layout.LEAVES))]
    if draw(st.integers(0, 5)) == 0:  # one component too few or too many
        if draw(st.booleans()):
            del parts[draw(st.integers(0, len(parts) - 1))]
        else:
            parts.insert(draw(st.integers(0, len(parts))), draw(component(("..", ".", "x"))))
    separator = draw(mostly(st.just("/"), st.sampled_from(["//", "/./", "/../"])))
    path = prefix + "/" + separator.join(parts)
    return path + draw(mostly(st.just(""), st.sampled_from(["/", "//", "/.", "\0"])))


def volume_ids() -> st.SearchStrategy[str]:
    hostile = st.one_of(st.just(""), text, nul_text, st.integers(129, 200).map(lambda n: "v" * n),
                        wide_text, st.just("../../etc"), st.just("/"))
    return mostly(st.sampled_from(VOLUME_IDS), hostile)


def capabilities() -> st.SearchStrategy:
    modes = st.sampled_from(list(_Mode.Mode.values()))
    fs_types = st.sampled_from(["", "ext4", "xfs"])
    valid = st.builds(lambda mode, fs: _Cap(mount=_Cap.MountVolume(fs_type=fs),
                                            access_mode=_Mode(mode=mode)),
                      st.sampled_from([_Mode.SINGLE_NODE_WRITER, _Mode.SINGLE_NODE_READER_ONLY,
                                       _Mode.SINGLE_NODE_SINGLE_WRITER]), fs_types)
    hostile = st.one_of(
        st.none(),
        st.builds(lambda mode: _Cap(block=_Cap.BlockVolume(), access_mode=_Mode(mode=mode)), modes),
        st.builds(lambda mode: _Cap(access_mode=_Mode(mode=mode)), modes),
        st.builds(lambda: _Cap(mount=_Cap.MountVolume())),
        st.builds(lambda mode: _Cap(mount=_Cap.MountVolume(), access_mode=_Mode(mode=mode)),
                  st.integers(-(2**31), 2**31 - 1)),
        st.builds(lambda fs, flags, group, mode: _Cap(
            mount=_Cap.MountVolume(fs_type=fs, mount_flags=flags, volume_mount_group=group),
            access_mode=_Mode(mode=mode)),
            st.one_of(text, nul_text, long_name),
            st.lists(st.one_of(st.sampled_from(["ro", "bind", "remount", "nosuid", "rw"]), text),
                     max_size=4),
            st.one_of(text, nul_text), modes),
    )
    return mostly(valid, hostile)


def volume_contexts(layout: Layout) -> st.SearchStrategy[dict[str, str]]:
    paths = [layout.dsd_path, layout.apm_path, layout.run_dir]
    by_type = st.builds(lambda t, info: {"type": t, **(POD_INFO if info else {})},
                        st.sampled_from(TYPES), st.booleans())
    legacy = st.builds(lambda mode, path: {"mode": mode, "path": path},
                       st.sampled_from(["socket", "local"]), st.sampled_from(paths))
    hostile_paths = st.one_of(
        text, nul_text, st.sampled_from([
            "/", "/etc", "/etc/shadow", layout.run_dir + "/", layout.run_dir + "/../datadog",
            layout.dsd_path + "/", "//" + layout.dsd_path.lstrip("/"), layout.pods_dir,
            layout.outside, os.path.join(layout.outside, "secret.txt"), "relative/dsd.socket"]))
    hostile = st.one_of(
        st.dictionaries(text, text, max_size=5),
        st.builds(lambda t: {"type": t}, st.one_of(text, nul_text, st.sampled_from(
            ["DatadogLibrary", "DatadogInjectorPreload", "dsdsocket", "DSDSocket ", ""]))),
        st.builds(lambda mode, path: {"mode": mode, "path": path},
                  st.one_of(text, st.sampled_from(["socket", "local"])), hostile_paths),
        st.builds(lambda mode: {"mode": mode}, st.sampled_from(["socket", "local"])),
        st.builds(lambda path: {"path": path}, hostile_paths),
        st.builds(lambda t, extra: {"type": t, **extra}, st.sampled_from(TYPES),
                  st.dictionaries(text, text, max_size=3)),
        st.builds(lambda t, n: {"type": t, "filler": "f" * n}, st.sampled_from(TYPES),
                  st.integers(4000, 6000)),
    )
    return mostly(st.one_of(by_type, by_type, by_type, legacy), hostile)


def string_maps() -> st.SearchStrategy[dict[str, str]]:
    hostile = st.one_of(st.dictionaries(st.one_of(text, nul_text), st.one_of(text, nul_text),
                                        max_size=6),
                        st.integers(4000, 6000).map(lambda n: {"k": "v" * n}))
    return mostly(st.just({}), hostile)


@st.composite
def publish_requests(draw, layout: Layout) -> csi_pb2.NodePublishVolumeRequest:
    """A kubelet-like publish with a few fields (possibly none) made hostile."""
    hostile = draw(st.sets(st.sampled_from(PUBLISH_FIELDS), max_size=3))

    def pick(name, valid, hostile_strategy):
        return draw(hostile_strategy if name in hostile else valid)

    request = csi_pb2.NodePublishVolumeRequest(
        volume_id=pick("volume_id", st.sampled_from(VOLUME_IDS), volume_ids()),
        target_path=pick("target_path", valid_targets(layout), target_paths(layout)),
        readonly=draw(st.booleans()),
        staging_target_path=pick("staging_target_path", st.just(""),
                                 st.one_of(text, target_paths(layout))),
    )
    kubelet_capability = _Cap(mount=_Cap.MountVolume(),
                              access_mode=_Mode(mode=_Mode.SINGLE_NODE_WRITER))
    capability = pick("volume_capability", st.just(kubelet_capability), capabilities())
    if capability is not None:
        request.volume_capability.CopyFrom(capability)
    request.volume_context.update(pick("volume_context",
                                       st.builds(lambda t: {"type": t, **POD_INFO},
                                                 st.sampled_from(TYPES)),
                                       volume_contexts(layout)))
    request.publish_context.update(pick("publish_context", st.just({}), string_maps()))
    request.secrets.update(pick("secrets", st.just({}), string_maps()))
    return request


def unpublish_requests(layout: Layout) -> st.SearchStrategy:
    return st.builds(lambda vid, target: csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=vid, target_path=target),
        volume_ids(), mostly(valid_targets(layout), target_paths(layout)))


def stats_requests(layout: Layout) -> st.SearchStrategy:
    return st.builds(lambda vid, path, staging: csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=vid, volume_path=path, staging_target_path=staging),
        volume_ids(), mostly(valid_targets(layout), target_paths(layout)),
        mostly(st.just(""), text))


# ------------------------------------------------ any message, every field

def messages(descriptor, depth: int = 0) -> st.SearchStrategy:
    """Instances of the message ``descriptor`` with any subset of its fields
    set to arbitrary values (unknown enum numbers included)."""
    cls = message_factory.GetMessageClass(descriptor)
    fields = {}
    for fd in descriptor.fields:
        strategy = _field_values(fd, depth)
        if strategy is not None:
            fields[fd.name] = strategy

    def build(values: dict):
        msg = cls()
        for name, value in values.items():
            fd = descriptor.fields_by_name[name]
            if _is_map(fd):
                getattr(msg, name).update(value)
            elif fd.is_repeated and fd.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, name).extend(value)
            elif fd.is_repeated:
                getattr(msg, name).extend(value)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries({}, optional=fields).map(build)


def _is_map(fd) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _scalar(fd) -> st.SearchStrategy | None:
    t = FieldDescriptor
    if fd.type == t.TYPE_STRING:
        return st.one_of(text, nul_text, long_name)
    if fd.type == t.TYPE_BYTES:
        return st.binary(max_size=64)
    if fd.type == t.TYPE_BOOL:
        return st.booleans()
    if fd.type in (t.TYPE_INT64, t.TYPE_SINT64, t.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    if fd.type in (t.TYPE_UINT64, t.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if fd.type in (t.TYPE_INT32, t.TYPE_SINT32, t.TYPE_SFIXED32, t.TYPE_ENUM):
        return st.integers(-(2**31), 2**31 - 1)
    if fd.type in (t.TYPE_UINT32, t.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if fd.type in (t.TYPE_DOUBLE, t.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if fd.type == t.TYPE_FLOAT else 64)
    return None


def _field_values(fd, depth: int) -> st.SearchStrategy | None:
    if _is_map(fd):
        key = _scalar(fd.message_type.fields_by_name["key"])
        value_fd = fd.message_type.fields_by_name["value"]
        value = (_scalar(value_fd) if value_fd.type != FieldDescriptor.TYPE_MESSAGE
                 else messages(value_fd.message_type, depth + 1))
        return st.dictionaries(key, value, max_size=4)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if depth >= 3:
            return None
        single = messages(fd.message_type, depth + 1)
    else:
        single = _scalar(fd)
    if single is None:
        return None
    return st.lists(single, max_size=3) if fd.is_repeated else single
