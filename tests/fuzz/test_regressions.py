"""Fixed cases for faults the fuzzers found, so each stays fixed whatever the
fuzzers happen to draw."""

from __future__ import annotations

import grpc

from csi_driver.csi.v1 import csi_pb2


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
