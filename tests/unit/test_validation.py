"""Request validation and volume-type resolution, before anything touches disk."""

from __future__ import annotations

import grpc
import pytest

from csi_driver import targets, validation
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2
from csi_driver.errors import RequestError
from csi_driver.sandbox import kubelet
from csi_driver.volumes import INVALID_TYPE, Kind, sockets, type_label

ROOT = "/var/lib/kubelet"
CONFIG = Config(node_id="unit")
UID = "0f0e3d3c-6a5b-4c4d-8e8f-0a0b0c0d0e0f"
_Mode = csi_pb2.VolumeCapability.AccessMode


def _request(**changes: object) -> csi_pb2.NodePublishVolumeRequest:
    request = kubelet.publish_request(ROOT, UID, "dd", {"type": "DSDSocket"})
    for name, value in changes.items():
        if name == "volume_context":
            request.volume_context.clear()
            request.volume_context.update(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    return request


def _refused(request: csi_pb2.NodePublishVolumeRequest) -> RequestError:
    with pytest.raises(RequestError) as err:
        validation.publish(request, CONFIG)
    return err.value


def test_a_kubelet_request_resolves_to_the_agent_socket():
    req = validation.publish(_request(), CONFIG)
    assert req.source.host_path == CONFIG.dsd_host_socket_path and req.source.kind is Kind.SOCKET
    assert req.target.pod_uid == UID and req.target.leaf == "mount"
    assert req.volume_id == kubelet.volume_id(UID, "dd")


@pytest.mark.parametrize("changes,code,words", [
    ({"volume_id": ""}, "INVALID_ARGUMENT", "volume_id is required"),
    ({"volume_id": "x" * 129}, "INVALID_ARGUMENT", "longer than 128"),
    ({"target_path": "/etc/passwd"}, "INVALID_ARGUMENT", "outside the kubelet pods directory"),
    ({"target_path": f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi/../../x/mount"},
     "INVALID_ARGUMENT", "'..'"),
    ({"target_path": f"{ROOT}/pods/{UID}/volumes/kubernetes.io~secret/dd/mount"},
     "INVALID_ARGUMENT", "layout"),
    ({"staging_target_path": "/staging"}, "INVALID_ARGUMENT", "no staging step"),
    ({"volume_context": {"type": "Nope"}}, "INVALID_ARGUMENT", "supported types: APMSocket"),
    ({"volume_context": {"type": "DatadogLibrary"}}, "INVALID_ARGUMENT", "library.package"),
    ({"volume_context": {"type": "DatadogInjectorPreload"}}, "INVALID_ARGUMENT", "readOnly: true"),
    ({"volume_context": {"mode": "socket", "path": "/etc/shadow"}}, "INVALID_ARGUMENT", "not allowed"),
    ({"volume_context": {"k": "v" * 5000}}, "INVALID_ARGUMENT", "4096 bytes"),
])
def test_bad_requests_get_a_status_that_says_why(changes, code, words):
    err = _refused(_request(**changes))
    assert err.code.name == code and words in err.message


def test_capability_must_be_a_mount_with_an_access_mode():
    request = _request()
    request.ClearField("volume_capability")
    assert "volume_capability is required" in _refused(request).message
    request = _request()
    request.volume_capability.block.SetInParent()
    assert "block access" in _refused(request).message
    request = _request()
    request.volume_capability.access_mode.mode = _Mode.UNKNOWN
    assert "access_mode" in _refused(request).message
    request = _request()
    request.volume_capability.mount.mount_flags.append("nosuid")
    assert "mount_flags" in _refused(request).message


def test_legacy_schema_names_only_the_configured_paths():
    for mode, path, kind in (("socket", CONFIG.dsd_host_socket_path, Kind.SOCKET),
                             ("local", "/var/run/datadog", Kind.DIRECTORY)):
        req = validation.publish(_request(volume_context={"mode": mode, "path": path}), CONFIG)
        assert (req.source.type, req.source.host_path, req.source.kind) == (mode, path, kind)
        assert req.source.deprecation


def test_unpublish_needs_only_the_id_and_a_valid_target():
    req = validation.unpublish(kubelet.unpublish_request(ROOT, UID, "dd"), CONFIG)
    assert req.target.path == kubelet.target_path(ROOT, UID, "dd")
    with pytest.raises(RequestError) as err:
        validation.unpublish(csi_pb2.NodeUnpublishVolumeRequest(volume_id="v", target_path="/tmp/x"),
                             CONFIG)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("raw,ok", [
    (f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi/dd/mount", True),
    (f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi/dd/other-leaf", True),
    (f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi/dd/mount/", False),
    (f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi//mount", False),
    (f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi/dd", False),
    (f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi/dd/mount\0", False),
    (f"{ROOT}/pods/{UID}/volumes/kubernetes.io~csi/{'n' * 256}/mount", False),
    ("relative/pods/x/volumes/kubernetes.io~csi/dd/mount", False),
])
def test_target_paths_follow_the_kubelet_layout(raw, ok):
    if ok:
        assert targets.parse(raw, f"{ROOT}/pods").path == raw
    else:
        with pytest.raises(RequestError) as err:
            targets.parse(raw, f"{ROOT}/pods")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_metric_type_labels_come_from_a_closed_set():
    assert type_label({"type": "DSDSocket"}) == "DSDSocket"
    assert type_label({"type": "DatadogLibrary"}) == "DatadogLibrary"
    assert type_label({"mode": "local"}) == "local"
    for context in ({"type": "x" * 60}, {"type": "DSDSocket "}, {}, {"mode": "other"}):
        assert type_label(context) == INVALID_TYPE
    assert set(sockets.TYPES) <= sockets.KNOWN_TYPES
