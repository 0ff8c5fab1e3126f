"""The ground every fuzz test stands on: a kubelet tree with traps planted in
it, a real driver process, and the checks that run after every example.

After each example the driver must still answer ``Probe``, no mount may exist
outside the kubelet pods directory, nothing outside the pods directory may have
changed (not even transiently: directory mtimes are compared), and the driver
must be able to unpublish whatever it mounted. The tree is then put back as it
was, so examples do not depend on each other.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from csi_driver import mounts
from csi_driver.csi.v1 import csi_pb2
from support.driver import DriverProcess

CSI = "kubernetes.io~csi"
# Codes a CSI node plugin may answer hostile input with. INTERNAL is not among
# them: nothing a caller sends should make the driver fail in a way it cannot
# name. UNKNOWN means an exception escaped the servicer.
ALLOWED = frozenset({
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNIMPLEMENTED,
})
SERVICES = ("Identity", "Node")
DEFAULT_EXAMPLES = 1000
# Every fuzz result line of the session, shown in the terminal summary and
# appended to REPORT_FILE (FUZZ_REPORT, else a file in pytest's temp dir).
FIGURES: list[str] = []
REPORT_FILE: str | None = os.environ.get("FUZZ_REPORT")


def examples(default: int = DEFAULT_EXAMPLES) -> int:
    """Examples per fuzz test: FUZZ_EXAMPLES, or ``default``."""
    return max(1, int(os.environ.get("FUZZ_EXAMPLES", default)))


def report(line: str) -> None:
    """Show ``line`` in the test's output (-s, -rA) and in the terminal summary."""
    FIGURES.append(line)
    print(line)
    if REPORT_FILE:
        with open(REPORT_FILE, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def methods() -> list[tuple[str, object]]:
    """(full gRPC path, request descriptor) of every Identity and Node call."""
    found = []
    for service in SERVICES:
        for method in csi_pb2.DESCRIPTOR.services_by_name[service].methods:
            found.append((f"/csi.v1.{service}/{method.name}", method.input_type))
    return found


# ------------------------------------------------------------- mount table

def mount_points(pid: int | str = "self", under: str = "/", sources: Iterable[str] = ()) -> list[bytes]:
    """Mount points of ``pid``'s namespace, unescaped, as raw bytes: those below
    ``under``, and, wherever they are, those whose source ends with one of
    ``sources`` (so that a mount of the agent's socket anywhere still shows,
    while unrelated mounts elsewhere on a busy machine do not)."""
    prefix = under.rstrip("/") + "/"
    found = []
    for entry in mounts.mount_table(f"/proc/{pid}/mountinfo"):
        root = entry.root.removesuffix("//deleted")
        if entry.mount_point.startswith(prefix) or any(root.endswith(s) for s in sources):
            found.append(os.fsencode(entry.mount_point))
    return sorted(found)


def difference(after: Iterable[bytes], before: Iterable[bytes]) -> list[bytes]:
    """Entries in ``after`` beyond those in ``before`` (as multisets: mounts stack)."""
    return sorted((collections.Counter(after) - collections.Counter(before)).elements())


# -------------------------------------------------------------- snapshots

def tree(root: str, skip: frozenset[str] = frozenset(), mtimes: bool = False) -> dict[str, tuple]:
    """Every entry below ``root`` (symlinks not followed) with its kind, size,
    mode and link target; with ``mtimes``, directory mtimes too, so a file
    created and removed again still shows."""
    entries: dict[str, tuple] = {}

    def describe(path: str) -> tuple:
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        return (kind, st.st_size if stat.S_ISREG(kind) else 0, stat.S_IMODE(st.st_mode),
                os.readlink(path) if stat.S_ISLNK(kind) else "",
                st.st_mtime_ns if mtimes and stat.S_ISDIR(kind) else 0)

    if mtimes:
        entries["."] = describe(root)
    for directory, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        kept = []
        for name in dirs + files:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            entries[rel] = describe(os.path.join(directory, name))
            if name in dirs:
                kept.append(name)
        dirs[:] = [d for d in dirs if d in kept]
    return entries


# ------------------------------------------------------------ the layout

@dataclass(frozen=True)
class Plant:
    path: str  # relative to the work root
    kind: str  # dir | file | link | fifo
    content: str = ""  # file content or link target


class Layout:
    """A kubelet root whose pods directory is full of traps, and an "outside"
    directory that looks like a pod tree, for symlinks to point at.

    Pods: ``good`` is a normal pod with volume directories a, b and c; the
    others replace one directory of the layout with a symlink to the outside
    tree (``link-pod``, ``vlink``, ``clink``), with a file (``notdir``) or with a
    symlink loop (``loop``). In ``good``, ``to-outside`` and ``rel-outside``
    are volume directories that are symlinks out, and ``odd`` holds one of
    every kind of leaf a target could already be.
    """

    PODS = ("good", "link-pod", "vlink", "clink", "notdir", "loop", "missing-pod", "pod")
    VOLUMES = ("a", "b", "c", "to-outside", "rel-outside", "to-inside", "odd", "missing", "vol")
    LEAVES = ("mount", "vol_data.json", "link-dir", "link-file", "dangling", "full-dir",
              "full-file", "empty-dir", "empty-file", "fifo", "other")
    # Planted leaves the driver may legitimately consume: an empty mount point
    # of the other kind is replaced, and an empty target is removed on unpublish.
    CONSUMABLE = ("empty-dir", "empty-file")

    def __init__(self, root: str) -> None:
        self.root = root
        self.kubelet_root = os.path.join(root, "kubelet")
        self.pods_dir = os.path.join(self.kubelet_root, "pods")
        self.outside = os.path.join(root, "outside")
        self.run_dir = os.path.join(root, "run", "datadog")
        self.dsd_path = os.path.join(self.run_dir, "dsd.socket")
        self.apm_path = os.path.join(self.run_dir, "apm.socket")
        outside_vol = os.path.join(self.outside, "pod", "volumes", CSI, "vol")
        csi_dir = os.path.join(self.pods_dir, "good", "volumes", CSI)
        odd = "kubelet/pods/good/volumes/" + CSI + "/odd"
        self.plants: list[Plant] = [
            Plant("outside/pod/volumes/" + CSI + "/vol", "dir"),
            Plant("outside/pod/volumes/" + CSI + "/vol/vol_data.json", "file", "{}"),
            Plant("outside/secret.txt", "file", "secret"),
            Plant("outside/empty-dir", "dir"),
            Plant("kubelet/plugins/registry", "dir"),
            Plant("kubelet/pods-shadow", "dir"),
            *(p for vol in "abc" for p in (
                Plant(f"kubelet/pods/good/volumes/{CSI}/{vol}", "dir"),
                Plant(f"kubelet/pods/good/volumes/{CSI}/{vol}/vol_data.json", "file",
                      json.dumps({"specVolID": vol, "driverName": "k8s.csi.datadoghq.com"})))),
            Plant("kubelet/pods/good/volumes/kubernetes.io~empty-dir/data", "dir"),
            Plant(f"kubelet/pods/good/volumes/{CSI}/to-outside", "link", outside_vol),
            Plant(f"kubelet/pods/good/volumes/{CSI}/rel-outside", "link",
                  os.path.relpath(outside_vol, csi_dir)),
            Plant(f"kubelet/pods/good/volumes/{CSI}/to-inside", "link", "a"),
            Plant(odd, "dir"),
            Plant(odd + "/link-dir", "link", os.path.join(self.outside, "empty-dir")),
            Plant(odd + "/link-file", "link", os.path.join(self.outside, "secret.txt")),
            Plant(odd + "/dangling", "link", os.path.join(self.outside, "missing")),
            Plant(odd + "/full-dir", "dir"),
            Plant(odd + "/full-dir/keep.txt", "file", "keep"),
            Plant(odd + "/full-file", "file", "content"),
            Plant(odd + "/empty-dir", "dir"),
            Plant(odd + "/empty-file", "file"),
            Plant(odd + "/fifo", "fifo"),
            Plant("kubelet/pods/link-pod", "link", os.path.join(self.outside, "pod")),
            Plant("kubelet/pods/vlink", "dir"),
            Plant("kubelet/pods/vlink/volumes", "link", os.path.join(self.outside, "pod", "volumes")),
            Plant("kubelet/pods/clink/volumes", "dir"),
            Plant(f"kubelet/pods/clink/volumes/{CSI}", "link",
                  os.path.join(self.outside, "pod", "volumes", CSI)),
            Plant("kubelet/pods/notdir", "dir"),
            Plant("kubelet/pods/notdir/volumes", "file", "not a directory"),
            Plant("kubelet/pods/loop", "link", "loop"),
        ]
        self._sockets: list[socket.socket] = []

    def target(self, pod: str = "good", volume: str = "a", leaf: str = "mount") -> str:
        return os.path.join(self.pods_dir, pod, "volumes", CSI, volume, leaf)

    def build(self) -> Layout:
        os.makedirs(self.pods_dir)
        os.makedirs(self.run_dir)
        for path, kind in ((self.dsd_path, socket.SOCK_DGRAM), (self.apm_path, socket.SOCK_STREAM)):
            sock = socket.socket(socket.AF_UNIX, kind)
            sock.bind(path)
            self._sockets.append(sock)
        self.restore()
        return self

    def restore(self) -> None:
        """Re-plant anything missing or changed (only ``CONSUMABLE`` leaves can be)."""
        for plant in self.plants:
            path = os.path.join(self.root, plant.path)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None and self._matches(st, plant):
                continue
            if st is not None:
                (os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if plant.kind == "dir":
                os.mkdir(path, 0o750)
            elif plant.kind == "file":
                with open(path, "w") as out:
                    out.write(plant.content)
            elif plant.kind == "link":
                os.symlink(plant.content, path)
            else:
                os.mkfifo(path)

    @staticmethod
    def _matches(st: os.stat_result, plant: Plant) -> bool:
        return {"dir": stat.S_ISDIR, "file": stat.S_ISREG, "link": stat.S_ISLNK,
                "fifo": stat.S_ISFIFO}[plant.kind](st.st_mode)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


# ------------------------------------------------------------ the harness

@dataclass
class Fuzz:
    """One driver process and the per-example checks against it."""

    layout: Layout
    driver: DriverProcess
    codes: collections.Counter = field(default_factory=collections.Counter)
    inputs: int = 0
    examples: int = 0
    cleanups: int = 0
    _baseline_mounts: list[bytes] = field(default_factory=list)
    _baseline_outside: dict = field(default_factory=dict)
    _baseline_pods: dict = field(default_factory=dict)
    _calls: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pods_prefix = os.fsencode(self.layout.pods_dir) + b"/"
        self._outside_skip = frozenset({"kubelet/pods", "driver.log", "plugin"})

    @property
    def pid(self) -> int:
        assert self.driver.process is not None
        return self.driver.process.pid

    def mounts(self) -> list[bytes]:
        """The driver's namespace's mounts this harness watches: below its own
        root, or of the agent's sockets and directory anywhere."""
        sources = [os.path.join(*path.split("/")[-3:]) for path in
                   (self.layout.dsd_path, self.layout.apm_path, os.path.dirname(self.layout.dsd_path))]
        return mount_points(self.pid, self.layout.root, sources)

    def settle(self) -> None:
        """Take the baselines the checks compare against."""
        self._baseline_mounts = self.mounts()
        self._baseline_outside = tree(self.layout.root, self._outside_skip, mtimes=True)
        self._baseline_pods = tree(self.layout.pods_dir)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # ---------------------------------------------------------- calling

    def raw(self, method: str) -> Callable:
        if method not in self._calls:
            self._calls[method] = self.driver.channel.unary_unary(
                method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        return self._calls[method]

    def send(self, method: str, payload: bytes, what: object = None, count: bool = True,
             allowed: frozenset = ALLOWED) -> tuple[grpc.StatusCode, str]:
        """Send serialized ``payload`` to ``method``; the answer's status must be allowed."""
        try:
            self.raw(method)(payload, timeout=30)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        if count:
            self.inputs += 1
            self.codes[code.name] += 1
        assert code in allowed, (
            f"{method} answered {code.name}: {details!r}\nrequest: {_show(what, payload)}\n"
            f"driver log tail:\n{self.driver.logs()[-3000:]}")
        return code, details

    def call(self, method: str, request, **options) -> tuple[grpc.StatusCode, str]:
        return self.send(method, request.SerializeToString(), request, **options)

    # ---------------------------------------------------------- checking

    def check(self) -> None:
        """After an example: the driver is up, nothing escaped the pods
        directory, and everything the example did is undone."""
        self.examples += 1
        assert self.driver.process.poll() is None, f"driver exited:\n{self.driver.logs()[-3000:]}"
        code, details = self.send("/csi.v1.Identity/Probe", b"", "Probe", count=False)
        assert code == grpc.StatusCode.OK, details

        mounts = self.mounts()
        added = difference(mounts, self._baseline_mounts)
        removed = difference(self._baseline_mounts, mounts)
        assert not removed, f"mounts the driver did not make were removed: {removed}"
        escaped = [m for m in added if not m.startswith(self._pods_prefix)]
        assert not escaped, f"mounted outside the pods directory: {escaped}"
        outside = tree(self.layout.root, self._outside_skip, mtimes=True)
        assert outside == self._baseline_outside, (
            "something changed outside the pods directory: "
            f"{_tree_diff(self._baseline_outside, outside)}")

        for mount_point in sorted(added, key=len, reverse=True):
            self._unpublish(mount_point)
        assert self.mounts() == self._baseline_mounts

        pods = tree(self.layout.pods_dir)
        leftovers = {path: change for path, change in _tree_diff(self._baseline_pods, pods).items()
                     if os.path.basename(path) not in Layout.CONSUMABLE}
        assert not leftovers, f"the pods directory was not left as it was: {leftovers}"
        self.layout.restore()

    def _unpublish(self, mount_point: bytes) -> None:
        """Undo a publish through the driver itself: it must be able to."""
        path = os.fsdecode(mount_point)
        request = csi_pb2.NodeUnpublishVolumeRequest(volume_id="fuzz-cleanup", target_path=path)
        self.cleanups += 1
        code, details = self.send("/csi.v1.Node/NodeUnpublishVolume",
                                  request.SerializeToString(), request, count=False)
        assert code == grpc.StatusCode.OK, f"cannot unpublish {path}: {code.name} {details}"
        assert mount_point not in difference(self.mounts(), self._baseline_mounts), (
            f"unpublish of {path} answered OK but the mount is still there")

    def summary(self, name: str) -> str:
        codes = dict(sorted(self.codes.items(), key=lambda kv: -kv[1]))
        return (f"fuzz[{name}]: {self.inputs} inputs tried in {self.examples} examples, "
                f"codes: {codes}, cleanup unpublishes: {self.cleanups}")


def _tree_diff(before: dict, after: dict) -> dict:
    changes = {}
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            changes[path] = (before.get(path), after.get(path))
    return changes


def _show(what: object, payload: bytes, limit: int = 2000) -> str:
    text = repr(what) if what is not None else repr(payload)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"
