"""Repeated, conflicting, concurrent and post-restart calls."""

from __future__ import annotations

import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from support import kubelet, pod
from support.agent import DemoAgent
from support.snapshot import mounts_under


def test_publish_twice_is_one_mount(driver, kubelet_root):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocketDirectory"})
    for _ in range(3):
        driver.node.NodePublishVolume(request)
    assert len(mounts_under(target)) == 1


def test_concurrent_identical_publishes_are_serialized(driver, kubelet_root):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"})

    def publish(_):
        try:
            driver.node.NodePublishVolume(request)
            return "OK"
        except grpc.RpcError as err:
            return err.code().name

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(publish, range(32)))
    assert set(outcomes) <= {"OK", "ABORTED"} and "OK" in outcomes
    assert len(mounts_under(target)) == 1


def test_different_volume_on_mounted_target_is_refused(driver, kubelet_root):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"}))
    other = kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"})
    other.volume_id = "csi-other"
    for request in (other, kubelet.publish_request(kubelet_root, uid, "dd", {"type": "APMSocket"})):
        with pytest.raises(grpc.RpcError) as err:
            driver.node.NodePublishVolume(request)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(mounts_under(target)) == 1


def test_republish_ignores_the_requested_read_only_flag(driver, kubelet_root):
    """Socket volumes are always mounted read-only: a republish asking for the
    other readOnly asks for the same mount, so it succeeds."""
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    for readonly in (False, True, False):
        driver.node.NodePublishVolume(kubelet.publish_request(
            kubelet_root, uid, "dd", {"type": "DSDSocket"}, readonly=readonly))
    assert len(mounts_under(target)) == 1


def test_unpublish_missing_target_succeeds(driver, kubelet_root):
    uid = str(uuid.uuid4())
    # Never published, parent missing too: the kubelet may retry after cleanup.
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))


def test_unpublish_removes_every_stacked_layer(driver, kubelet_root):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocketDirectory"})
    driver.node.NodePublishVolume(request)
    # A second layer on the same target, as a crashed or foreign mounter could leave.
    subprocess.run(["mount", "--bind", os.path.dirname(target), target], check=True)
    assert len(mounts_under(target)) == 2
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    assert mounts_under(target) == []
    assert not os.path.exists(target)


def test_leftover_target_of_wrong_kind_is_replaced(driver, kubelet_root):
    """A CO that pre-creates the target as a directory still gets a socket-file volume."""
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    os.mkdir(target)
    driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"}))
    assert not os.path.isdir(target) and len(mounts_under(target)) == 1


def test_restart_with_mounted_volumes_then_clean_unpublish(driver, agent, kubelet_root):
    pods = [(str(uuid.uuid4()), t) for t in ("DSDSocket", "APMSocketDirectory")]
    for uid, volume_type in pods:
        kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
        driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": volume_type}))
    driver.terminate()
    driver.start()
    for uid, volume_type in pods:
        # The kubelet republishes after a restart; still one mount each.
        driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": volume_type}))
        target = kubelet.target_path(kubelet_root, uid, "dd")
        assert len(mounts_under(target)) == 1
    uid, _ = pods[0]
    assert pod.send("dgram", kubelet.target_path(kubelet_root, uid, "dd"), "after restart").returncode == 0
    assert DemoAgent.expect(agent.dsd_received) == b"after restart"
    for uid, _ in pods:
        driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
        kubelet.remove_volume_dir(kubelet_root, uid, "dd")
    assert mounts_under(kubelet_root) == []


def test_driver_killed_then_unpublish_cleans_up(driver, kubelet_root):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"}))
    driver.kill()
    driver.start()
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    assert mounts_under(target) == [] and not os.path.exists(target)


@pytest.fixture
def read_only_agent_directory(agent):
    """The agent's directory as the shipped chart gives it to the driver: read-only."""
    directory = agent.directory
    subprocess.run(["mount", "--bind", directory, directory], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)
        assert os.statvfs(directory).f_flag & os.ST_RDONLY
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)


@pytest.mark.parametrize("restart", ["none", "sigterm", "sigkill"])
@pytest.mark.parametrize("volume_type", ["DSDSocket", "DSDSocketDirectory"])
def test_republish_when_source_directory_is_read_only(driver, agent, kubelet_root,
                                                      read_only_agent_directory, volume_type, restart):
    """The chart mounts the agent's directory read-only into the driver: every
    bind mount then inherits read-only. A read-write request, then a driver
    restart, then the kubelet's republish of the same request must succeed."""
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": volume_type}, readonly=False)
    driver.node.NodePublishVolume(request)
    if restart == "sigterm":
        assert driver.terminate() == 0
        driver.start()
    elif restart == "sigkill":
        driver.kill()
        driver.start()
    driver.node.NodePublishVolume(request)
    assert len(mounts_under(target)) == 1
    relative, transport = pod.SOCKET_IN_VOLUME[volume_type]
    assert pod.send(transport, target, "through a read-only source", relative).returncode == 0
    assert DemoAgent.expect(agent.received(transport)) == b"through a read-only source"
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    assert mounts_under(target) == []


def test_volume_stats_checks_the_volume_id(driver, kubelet_root):
    from csi_driver.csi.v1 import csi_pb2

    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"})
    driver.node.NodePublishVolume(request)
    stats = driver.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=request.volume_id, volume_path=target))
    assert not stats.volume_condition.abnormal
    with pytest.raises(grpc.RpcError) as err:
        driver.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
            volume_id="csi-another", volume_path=target))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
