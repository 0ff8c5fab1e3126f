"""Every bad request gets its CSI status and leaves the disk and the mount table untouched."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest

from csi_driver.csi.v1 import csi_pb2
from support import kubelet
from support.snapshot import mount_table, tree

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
_Cap = csi_pb2.VolumeCapability


def _request(root: str, uid: str, **changes) -> csi_pb2.NodePublishVolumeRequest:
    req = kubelet.publish_request(root, uid, "dd", {"type": "DSDSocket"})
    for field, value in changes.items():
        if value is None:
            req.ClearField(field)
        elif field == "volume_context":
            req.volume_context.clear()
            req.volume_context.update(value)
        elif field == "volume_capability":
            req.volume_capability.CopyFrom(value)
        else:
            setattr(req, field, value)
    return req


def _cases(root: str, uid: str, agent, outside: str) -> dict[str, tuple]:
    vol_dir = kubelet.volume_dir(root, uid, "dd")
    return {
        "missing volume_id": (_request(root, uid, volume_id=None), INVALID, "volume_id"),
        "missing target_path": (_request(root, uid, target_path=None), INVALID, "target_path"),
        "missing volume_capability": (_request(root, uid, volume_capability=None), INVALID,
                                      "volume_capability"),
        "missing access mode": (_request(root, uid, volume_capability=_Cap(mount=_Cap.MountVolume())),
                                INVALID, "access_mode"),
        "missing access type": (_request(root, uid, volume_capability=_Cap(
            access_mode=_Cap.AccessMode(mode=1))), INVALID, "access_type"),
        "block capability": (_request(root, uid, volume_capability=_Cap(
            block=_Cap.BlockVolume(), access_mode=_Cap.AccessMode(mode=1))), INVALID, "block"),
        "mount flags": (_request(root, uid, volume_capability=_Cap(
            mount=_Cap.MountVolume(mount_flags=["nosuid"]), access_mode=_Cap.AccessMode(mode=1))),
            INVALID, "mount_flags"),
        "missing type": (_request(root, uid, volume_context={}), INVALID, "APMSocket, APMSocketDirectory"),
        "unknown type": (_request(root, uid, volume_context={"type": "Sockets"}), INVALID,
                         "supported types: APMSocket"),
        "relative target": (_request(root, uid, target_path="pods/x/mount"), INVALID, "absolute"),
        "dot-dot in target": (_request(root, uid, target_path=f"{vol_dir}/../../../../../etc/mount"),
                              INVALID, ".."),
        "target outside kubelet root": (_request(root, uid, target_path=f"{outside}/mount"), INVALID,
                                        "outside the kubelet pods directory"),
        "target not in volume layout": (_request(root, uid, target_path=f"{root}/pods/{uid}/mount"),
                                        INVALID, "layout"),
        "symlinked parent": (_request(root, uid, target_path=kubelet.target_path(root, uid, "link")),
                             INVALID, "symlink"),
        "missing parent": (_request(root, uid, target_path=kubelet.target_path(root, uid, "nodir")),
                           PRECONDITION, "does not exist"),
        "legacy path not allowed": (_request(root, uid, volume_context={
            "mode": "socket", "path": "/etc/shadow"}), INVALID, "not allowed"),
        "legacy path is the directory in socket mode": (_request(root, uid, volume_context={
            "mode": "socket", "path": os.path.dirname(agent.dsd_path)}), INVALID, "not allowed"),
        "legacy mode unknown": (_request(root, uid, volume_context={
            "mode": "hostPath", "path": agent.dsd_path}), INVALID, "unknown legacy mode"),
        "1 MB volume_context value": (_request(root, uid, volume_context={
            "type": "DSDSocket", "x": "v" * (1 << 20)}), INVALID, "bytes"),
        "NUL in target": (_request(root, uid, target_path=f"{vol_dir}/mo\0unt"), INVALID, "NUL"),
        "staging path given": (_request(root, uid, staging_target_path="/tmp/stage"), INVALID,
                               "staging"),
        "volume_id too long": (_request(root, uid, volume_id="v" * 129), INVALID, "128 bytes"),
    }


def test_bad_publish_requests(driver, agent, kubelet_root, tmp_path):
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.makedirs(os.path.dirname(kubelet.volume_dir(kubelet_root, uid, "link")), exist_ok=True)
    os.symlink(str(outside), kubelet.volume_dir(kubelet_root, uid, "link"))
    def disk():
        return tree(kubelet_root), tree(str(outside)), tree(agent.directory)

    mounts_before, disk_before = mount_table(), disk()
    failures = []
    for name, (request, code, fragment) in _cases(kubelet_root, uid, agent, str(outside)).items():
        with pytest.raises(grpc.RpcError) as err:
            driver.node.NodePublishVolume(request)
        got = (err.value.code(), err.value.details())
        if got[0] != code or fragment not in got[1]:
            failures.append(f"{name}: got {got[0].name} {got[1][:200]!r}, want {code.name} ~ {fragment!r}")
        if mount_table() != mounts_before or disk() != disk_before:
            failures.append(f"{name}: left something behind")
            mounts_before, disk_before = mount_table(), disk()
    assert not failures, "\n".join(failures)
    assert os.listdir(outside) == []


def test_agent_socket_missing_is_actionable(driver, agent, kubelet_root, tmp_path):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    agent.stop()
    mounts_before, disk_before = mount_table(), tree(kubelet_root)
    for volume_type in ("DSDSocket", "APMSocket"):
        with pytest.raises(grpc.RpcError) as err:
            driver.node.NodePublishVolume(kubelet.publish_request(
                kubelet_root, uid, "dd", {"type": volume_type}))
        assert err.value.code() == PRECONDITION
        path = agent.dsd_path if volume_type == "DSDSocket" else agent.apm_path
        assert path in err.value.details() and "does not exist" in err.value.details()
    assert mount_table() == mounts_before and tree(kubelet_root) == disk_before
    assert not os.path.exists(target)


def test_agent_path_not_a_socket(driver, agent, kubelet_root):
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    agent.stop()
    with open(agent.dsd_path, "w") as f:
        f.write("not a socket")
    with pytest.raises(grpc.RpcError) as err:
        driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"}))
    assert err.value.code() == PRECONDITION and "not a Unix socket" in err.value.details()
    os.unlink(agent.dsd_path)


def test_bad_unpublish_requests(driver, kubelet_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cases = {
        "missing volume_id": (csi_pb2.NodeUnpublishVolumeRequest(target_path=f"{kubelet_root}/pods/u/x"),
                              "volume_id"),
        "missing target_path": (csi_pb2.NodeUnpublishVolumeRequest(volume_id="v"), "target_path"),
        "outside": (csi_pb2.NodeUnpublishVolumeRequest(volume_id="v", target_path=str(outside)),
                    "outside"),
        "dot-dot": (csi_pb2.NodeUnpublishVolumeRequest(
            volume_id="v", target_path=f"{kubelet_root}/pods/../../elsewhere"), ".."),
    }
    for name, (request, fragment) in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            driver.node.NodeUnpublishVolume(request)
        assert err.value.code() == INVALID, name
        assert fragment in err.value.details(), name
    assert outside.exists()


def test_other_node_calls_are_unimplemented(driver):
    for call, request in (
        (driver.node.NodeStageVolume, csi_pb2.NodeStageVolumeRequest(volume_id="v")),
        (driver.node.NodeUnstageVolume, csi_pb2.NodeUnstageVolumeRequest(volume_id="v")),
        (driver.node.NodeExpandVolume, csi_pb2.NodeExpandVolumeRequest(volume_id="v")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
