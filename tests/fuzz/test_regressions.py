"""Fixed cases for faults the fuzzers found, so each stays fixed whatever the
fuzzers happen to draw."""

from __future__ import annotations

import os
import subprocess

import grpc

from csi_driver.csi.v1 import csi_pb2
from csi_driver.sandbox import kubelet


def test_invalid_utf8_is_invalid_argument(fuzz):
    # NodePublishVolumeRequest with target_path (field 4) = b"/var/lib/\xff".
    payload = b"\x22\x0a/var/lib/\xff"
    code, details = fuzz.send("/csi.v1.Node/NodePublishVolume", payload, count=False)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in details and "NodePublishVolume" in details
    code, _ = fuzz.send("/csi.v1.Identity/Probe", b"\x0a\x01\x80", count=False)  # unknown field
    assert code == grpc.StatusCode.OK
    fuzz.check()


def test_truncated_request_is_invalid_argument(fuzz):
    request = csi_pb2.NodeUnpublishVolumeRequest(volume_id="v", target_path=fuzz.layout.target())
    code, _ = fuzz.send("/csi.v1.Node/NodeUnpublishVolume", request.SerializeToString()[:-3],
                        count=False)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    fuzz.check()


PUBLISH = "/csi.v1.Node/NodePublishVolume"
UNPUBLISH = "/csi.v1.Node/NodeUnpublishVolume"


def _publish(target: str, volume_type: str) -> csi_pb2.NodePublishVolumeRequest:
    return kubelet.publish_request_at(target, "csi-regression", {"type": volume_type})


def test_failed_mount_removes_the_target_it_created(fuzz):
    """A mount the kernel refuses after the target was created: the answer
    names the failure and the created target is removed again."""
    run_dir = fuzz.layout.run_dir
    subprocess.run(["mount", "--bind", run_dir, run_dir], check=True)
    try:
        # open_tree() refuses to clone from an unbindable mount: EINVAL.
        subprocess.run(["mount", "--make-unbindable", run_dir], check=True)
        target = fuzz.layout.target("good", "b")
        for volume_type in ("DSDSocket", "DSDSocketDirectory"):
            code, details = fuzz.call(PUBLISH, _publish(target, volume_type), count=False,
                                      allowed=frozenset({grpc.StatusCode.INTERNAL}))
            assert "bind mount of" in details and "Invalid argument" in details, details
            assert not os.path.lexists(target)
    finally:
        subprocess.run(["umount", run_dir], check=True)
    fuzz.check()


def test_replacing_a_target_of_the_other_kind_leaks_no_descriptor(fuzz):
    """Checking whether a directory target is empty opened it and never closed it."""
    before = fuzz.open_fds()
    for _ in range(25):
        # An empty directory where a socket file goes is replaced; a full one is refused.
        fuzz.call(PUBLISH, _publish(fuzz.layout.target("good", "odd", "empty-dir"), "DSDSocket"))
        code, _ = fuzz.call(PUBLISH, _publish(fuzz.layout.target("good", "odd", "full-dir"),
                                              "DSDSocket"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        fuzz.check()
    assert fuzz.open_fds() - before <= 2, (before, fuzz.open_fds())


def test_never_mounts_over_a_target_with_contents(fuzz):
    """An existing target of the right kind but not empty (the kubelet's
    vol_data.json, a directory with files) would be hidden by the mount."""
    layout = fuzz.layout
    before = fuzz.mounts()
    for target, volume_type in (
        (layout.target("good", "odd", "full-dir"), "DSDSocketDirectory"),
        (layout.target("good", "odd", "full-file"), "DSDSocket"),
        (layout.target("good", "a", "vol_data.json"), "APMSocket"),
    ):
        code, details = fuzz.call(PUBLISH, _publish(target, volume_type), count=False)
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (target, code, details)
        assert "not an empty" in details, details
    assert fuzz.mounts() == before
    fuzz.check()
