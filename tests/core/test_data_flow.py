"""Bytes from a pod reach the agent through each published volume type."""

from __future__ import annotations

import os
import uuid

import pytest

from csi_driver import mounts
from support import kubelet, pod
from support.agent import DemoAgent
from support.snapshot import mounts_under


@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
@pytest.mark.parametrize("volume_type", list(pod.SOCKET_IN_VOLUME))
def test_pod_reaches_agent(driver, agent, kubelet_root, volume_type, readonly):
    relative, transport = pod.SOCKET_IN_VOLUME[volume_type]
    pod_uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, pod_uid, "dd")
    driver.node.NodePublishVolume(kubelet.publish_request(
        kubelet_root, pod_uid, "dd", {"type": volume_type}, readonly=readonly))

    assert [point for _root, point in mounts_under(target)] == [target]
    want_dir = volume_type.endswith("Directory")
    assert os.path.isdir(target) == want_dir
    # Whatever readOnly the pod asks for: a pod only needs to connect.
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(mounts.entry_at(target).options)

    payload = f"{volume_type}:{readonly}:{uuid.uuid4()}"
    sent = pod.send(transport, target, payload, relative)
    assert sent.returncode == 0, sent.stderr
    assert DemoAgent.expect(agent.received(transport)) == payload.encode()

    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, pod_uid, "dd"))
    assert mounts_under(target) == []
    assert not os.path.lexists(target)


def test_legacy_schema_reaches_agent(driver, agent, kubelet_root):
    for mode, path, transport, relative in (
        ("socket", agent.dsd_path, "dgram", ""),
        ("local", os.path.dirname(agent.apm_path), "stream", "apm.socket"),
    ):
        pod_uid = str(uuid.uuid4())
        target = kubelet.prepare_volume_dir(kubelet_root, pod_uid, "legacy")
        driver.node.NodePublishVolume(kubelet.publish_request(
            kubelet_root, pod_uid, "legacy", {"mode": mode, "path": path}))
        payload = f"legacy-{mode}"
        sent = pod.send(transport, target, payload, relative)
        assert sent.returncode == 0, sent.stderr
        assert DemoAgent.expect(agent.received(transport)) == payload.encode()
        driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, pod_uid, "legacy"))
    assert "deprecated" in driver.logs()


def test_directory_volume_cannot_be_written_through(driver, agent, kubelet_root):
    """Directory volumes are read-only: the pod can connect but cannot create files."""
    pod_uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, pod_uid, "dd")
    driver.node.NodePublishVolume(kubelet.publish_request(
        kubelet_root, pod_uid, "dd", {"type": "DSDSocketDirectory"}, readonly=False))
    with pytest.raises(OSError) as err:
        open(os.path.join(target, "planted"), "w")
    assert err.value.errno == 30  # EROFS
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, pod_uid, "dd"))
