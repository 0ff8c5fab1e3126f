"""How the kubelet lays out and calls an inline CSI volume: the volume id and
target path it derives, the directory and ``vol_data.json`` it prepares, and
the requests it sends. One place for the sandbox, the tests and the benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import os

from csi_driver import DRIVER_NAME as DRIVER
from csi_driver.csi.v1 import csi_pb2

__all__ = ["DRIVER", "POD_INFO_KEYS", "mount_capability", "prepare_volume_dir", "publish_request",
           "publish_request_at", "remove_volume_dir", "target_path", "unpublish_request",
           "volume_dir", "volume_id"]
_Mode = csi_pb2.VolumeCapability.AccessMode
POD_INFO_KEYS = ("csi.storage.k8s.io/pod.name", "csi.storage.k8s.io/pod.namespace",
                 "csi.storage.k8s.io/pod.uid", "csi.storage.k8s.io/serviceAccount.name",
                 "csi.storage.k8s.io/ephemeral")


def volume_id(pod_uid: str, volume_name: str) -> str:
    return "csi-" + hashlib.sha256((pod_uid + volume_name).encode()).hexdigest()


def volume_dir(kubelet_root: str, pod_uid: str, volume_name: str) -> str:
    return os.path.join(kubelet_root, "pods", pod_uid, "volumes", "kubernetes.io~csi", volume_name)


def target_path(kubelet_root: str, pod_uid: str, volume_name: str) -> str:
    return os.path.join(volume_dir(kubelet_root, pod_uid, volume_name), "mount")


def prepare_volume_dir(kubelet_root: str, pod_uid: str, volume_name: str, node: str = "test-node") -> str:
    """What the kubelet does before NodePublishVolume: the parent (0750) and vol_data.json."""
    directory = volume_dir(kubelet_root, pod_uid, volume_name)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    with open(os.path.join(directory, "vol_data.json"), "w") as f:
        json.dump({
            "specVolID": volume_name, "volumeHandle": volume_id(pod_uid, volume_name),
            "driverName": DRIVER, "nodeName": node, "volumeLifecycleMode": "Ephemeral",
        }, f)
    return os.path.join(directory, "mount")


def mount_capability(mode: csi_pb2.VolumeCapability.AccessMode.Mode.ValueType = _Mode.SINGLE_NODE_WRITER
                     ) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(),
                                    access_mode=_Mode(mode=mode))


def publish_request(kubelet_root: str, pod_uid: str, volume_name: str, attributes: dict[str, str],
                    readonly: bool = False, pod_name: str = "app", namespace: str = "default",
                    ) -> csi_pb2.NodePublishVolumeRequest:
    """What the kubelet sends for a pod's inline volume (``podInfoOnMount: true``)."""
    pod_info = dict(zip(POD_INFO_KEYS, (pod_name, namespace, pod_uid, "default", "true"), strict=False))
    return publish_request_at(target_path(kubelet_root, pod_uid, volume_name),
                              volume_id(pod_uid, volume_name), {**attributes, **pod_info},
                              readonly=readonly)


def publish_request_at(target: str, volume: str, context: dict[str, str],
                       readonly: bool = False) -> csi_pb2.NodePublishVolumeRequest:
    """A kubelet-shaped publish of ``volume`` at any ``target`` (hostile or not)."""
    return csi_pb2.NodePublishVolumeRequest(
        volume_id=volume, target_path=target, volume_capability=mount_capability(),
        readonly=readonly, volume_context=context)


def unpublish_request(kubelet_root: str, pod_uid: str, volume_name: str
                      ) -> csi_pb2.NodeUnpublishVolumeRequest:
    return csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=volume_id(pod_uid, volume_name),
        target_path=target_path(kubelet_root, pod_uid, volume_name))


def remove_volume_dir(kubelet_root: str, pod_uid: str, volume_name: str) -> None:
    """The kubelet's cleanup after unpublish: vol_data.json and the volume directory."""
    directory = volume_dir(kubelet_root, pod_uid, volume_name)
    try:
        os.unlink(os.path.join(directory, "vol_data.json"))
    except FileNotFoundError:
        pass
    os.rmdir(directory)
