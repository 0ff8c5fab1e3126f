"""Publishing while a directory of the target's path keeps turning into a
symlink to the outside and back.

A swapper thread replaces the volume directory, the ``volumes`` directory or
the pod directory with a symlink to a look-alike tree outside the kubelet pods
directory, atomically (``renameat2(RENAME_EXCHANGE)``) or by plain renames
(so the path is also briefly missing), as fast as it can. Meanwhile publishes
and unpublishes run against the target. Whatever the interleaving, no mount
may appear outside the pods directory, nothing may be created outside it,
every answer is a CSI status, and the driver keeps serving.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import grpc
import pytest

from csi_driver.csi.v1 import csi_pb2
from csi_driver.sandbox import kubelet
from csi_driver.volumes import sockets
from fuzz import harness
from fuzz.harness import CSI
from support.rename import exchange

ATTEMPTS = max(1, int(os.environ.get("FUZZ_RACE_ATTEMPTS", 1000)))
PUBLISH = "/csi.v1.Node/NodePublishVolume"
UNPUBLISH = "/csi.v1.Node/NodeUnpublishVolume"


class Swapper(threading.Thread):
    """Turns ``real`` into a symlink to ``outside`` and back until stopped;
    between cycles ``real`` is always the real directory again."""

    def __init__(self, real: str, outside: str, how: str) -> None:
        super().__init__(daemon=True)
        self.real, self.how = real, how
        self.decoy = os.path.join(os.path.dirname(real), ".decoy-" + os.path.basename(real))
        self.aside = os.path.join(os.path.dirname(real), ".aside-" + os.path.basename(real))
        os.symlink(outside, self.decoy)
        self.swaps = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                if self.how == "exchange":
                    exchange(self.real, self.decoy)  # real path -> symlink out
                    exchange(self.real, self.decoy)
                else:
                    os.rename(self.real, self.aside)  # real path missing
                    os.rename(self.decoy, self.real)  # real path -> symlink out
                    os.rename(self.real, self.decoy)  # missing again
                    os.rename(self.aside, self.real)
                self.swaps += 1
        except BaseException as err:  # surfaced by the test
            self.error = err

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        assert not self.is_alive()
        os.unlink(self.decoy)
        assert os.path.isdir(self.real) and not os.path.islink(self.real)


def _request(target: str, attempt: int) -> csi_pb2.NodePublishVolumeRequest:
    kind = sockets.TYPES[attempt % len(sockets.TYPES)]
    return kubelet.publish_request_at(target, "csi-race", {"type": kind},
                                      readonly=bool(attempt & 4))


@pytest.mark.parametrize("level,how", [
    ("volume", "exchange"), ("volumes", "exchange"), ("pod", "exchange"),
    ("volume", "rename"), ("pod", "rename"),
])
def test_publish_while_a_parent_turns_into_a_symlink(fuzz, level, how):
    layout = fuzz.layout
    pod = f"race-{level}-{how}"
    volume_dir = os.path.join(layout.pods_dir, pod, "volumes", CSI, "vol")
    os.makedirs(volume_dir, 0o750)
    with open(os.path.join(volume_dir, "vol_data.json"), "w") as out:
        out.write("{}")
    target = os.path.join(volume_dir, "mount")
    real, outside = {
        "volume": (volume_dir, os.path.join(layout.outside, "pod", "volumes", CSI, "vol")),
        "volumes": (os.path.join(layout.pods_dir, pod, "volumes"),
                    os.path.join(layout.outside, "pod", "volumes")),
        "pod": (os.path.join(layout.pods_dir, pod), os.path.join(layout.outside, "pod")),
    }[level]
    fuzz.settle()
    baseline_mounts = fuzz.mounts()
    baseline_outside = harness.tree(layout.outside, mtimes=True)
    pods_prefix = os.fsencode(layout.pods_dir) + b"/"
    publish_codes: collections.Counter = collections.Counter()
    unpublish_codes: collections.Counter = collections.Counter()

    def check_nothing_escaped() -> list[bytes]:
        added = harness.difference(fuzz.mounts(), baseline_mounts)
        escaped = [m for m in added if not m.startswith(pods_prefix)]
        assert not escaped, f"mounted outside the pods directory: {escaped}"
        assert harness.tree(layout.outside, mtimes=True) == baseline_outside, \
            "the outside tree changed"
        return added

    swapper = Swapper(real, outside, how)
    started = time.monotonic()
    swapper.start()
    try:
        for attempt in range(ATTEMPTS):
            code, _ = fuzz.call(PUBLISH, _request(target, attempt))
            publish_codes[code.name] += 1
            added = check_nothing_escaped()
            if code == grpc.StatusCode.OK:
                assert added, "publish answered OK but nothing is mounted"
            # Unpublish through the race too, until the mount is really gone
            # (an unpublish that finds the path missing answers OK with
            # nothing to do, so the mount table decides).
            for _ in range(10_000):
                if not added:
                    break
                code, _ = fuzz.call(UNPUBLISH, csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id="csi-race", target_path=target))
                unpublish_codes[code.name] += 1
                added = check_nothing_escaped()
            assert not added, f"could not unpublish {added} while racing"
            assert swapper.error is None, swapper.error
    finally:
        swapper.stop()
    elapsed = time.monotonic() - started
    assert swapper.error is None, swapper.error
    fuzz.check()
    harness.report(
        f"race[{level}/{how}]: {ATTEMPTS} publish attempts raced {swapper.swaps} symlink swaps "
        f"in {elapsed:.1f}s; publish codes {dict(publish_codes)}, "
        f"unpublish codes {dict(unpublish_codes)}; no mount or file outside the pods directory")
    assert publish_codes["OK"], "no publish ever won the race: the test raced nothing"
    assert len(publish_codes) > 1, "no publish ever lost the race: the swapper did not interleave"


class LeafSwapper(threading.Thread):
    """Keeps replacing the target itself with a symlink out, and deleting
    whatever is there, while the driver creates and mounts it."""

    def __init__(self, target: str, outside: str) -> None:
        super().__init__(daemon=True)
        self.target, self.outside = target, outside
        self.spare = os.path.join(os.path.dirname(target), ".spare-link")
        self.swaps = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for step in (lambda: os.symlink(self.outside, self.spare),
                         lambda: os.rename(self.spare, self.target),
                         lambda: os.unlink(self.target),
                         lambda: os.rmdir(self.target)):
                try:
                    step()
                except OSError:  # EBUSY on a mount point, EISDIR, ENOENT...
                    pass
            self.swaps += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        assert not self.is_alive()
        for path in (self.spare, self.target):
            if os.path.islink(path):
                os.unlink(path)


def test_publish_while_the_target_itself_is_swapped(fuzz):
    layout = fuzz.layout
    volume_dir = os.path.join(layout.pods_dir, "race-leaf", "volumes", CSI, "vol")
    os.makedirs(volume_dir, 0o750)
    target = os.path.join(volume_dir, "mount")
    fuzz.settle()
    baseline_mounts = fuzz.mounts()
    baseline_outside = harness.tree(layout.outside, mtimes=True)
    pods_prefix = os.fsencode(layout.pods_dir) + b"/"
    publish_codes: collections.Counter = collections.Counter()
    unpublish_codes: collections.Counter = collections.Counter()
    swapper = LeafSwapper(target, os.path.join(layout.outside, "secret.txt"))
    started = time.monotonic()
    swapper.start()
    try:
        for attempt in range(ATTEMPTS):
            code, _ = fuzz.call(PUBLISH, _request(target, attempt))
            publish_codes[code.name] += 1
            for _ in range(10_000):
                added = harness.difference(fuzz.mounts(), baseline_mounts)
                assert all(m.startswith(pods_prefix) for m in added), added
                assert harness.tree(layout.outside, mtimes=True) == baseline_outside
                if not added:
                    break
                code, _ = fuzz.call(UNPUBLISH, csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id="csi-race", target_path=target))
                unpublish_codes[code.name] += 1
            assert not added, f"could not unpublish {added} while racing"
    finally:
        swapper.stop()
    elapsed = time.monotonic() - started
    fuzz.check()
    harness.report(
        f"race[leaf]: {ATTEMPTS} publish attempts raced {swapper.swaps} replacements of the target "
        f"in {elapsed:.1f}s; publish codes {dict(publish_codes)}, "
        f"unpublish codes {dict(unpublish_codes)}; no mount or file outside the pods directory")
    assert publish_codes["OK"] and len(publish_codes) > 1
