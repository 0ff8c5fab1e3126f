"""NodeGetVolumeStats and the stale gauge: what a published volume really holds."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

from csi_driver.csi.v1 import csi_pb2
from support import kubelet


def _stats(driver, uid: str) -> csi_pb2.VolumeCondition:
    return driver.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=kubelet.volume_id(uid, "dd"),
        volume_path=kubelet.target_path(driver.kubelet_root, uid, "dd"))).volume_condition


STALE_GAUGE = "datadog_csi_driver_stale_socket_mounts"


def _mount_elsewhere(tmp_path, target: str) -> None:
    """A bind mount at ``target`` of a directory that is none of the agent's."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", "--bind", str(elsewhere), target], check=True)


def test_recreated_socket_directory_is_reported_stale(metered_driver, agent, kubelet_root):
    """Deleting and re-creating the agent's directory leaves directory volumes
    on the dead directory: pods get ENOENT, so stats and the gauge say so,
    also after a driver restart."""
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    metered_driver.node.NodePublishVolume(kubelet.publish_request(
        kubelet_root, uid, "dd", {"type": "DSDSocketDirectory"}))
    assert not _stats(metered_driver, uid).abnormal
    assert metered_driver.metric(STALE_GAUGE) == 0

    agent.stop()
    os.rmdir(agent.directory)
    os.mkdir(agent.directory)
    agent.start()
    condition = _stats(metered_driver, uid)
    assert condition.abnormal and "re-created" in condition.message, condition.message
    assert metered_driver.metric(STALE_GAUGE) == 1

    metered_driver.kill()
    metered_driver.start()
    condition = _stats(metered_driver, uid)
    assert condition.abnormal and "re-created" in condition.message, condition.message
    assert metered_driver.metric(STALE_GAUGE) == 1
    metered_driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))


def test_mount_this_driver_did_not_make_is_abnormal_and_its_unpublish_is_logged(
        driver, kubelet_root, tmp_path):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    os.mkdir(target)
    _mount_elsewhere(tmp_path, target)
    condition = _stats(driver, uid)
    assert condition.abnormal and "not made by this driver" in condition.message

    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    assert not os.path.ismount(target)
    warnings = [json.loads(line) for line in driver.logs().splitlines()
                if "did not make" in line]
    assert warnings and warnings[0]["target"] == target
    assert warnings[0]["source"].endswith("/elsewhere")


def test_something_mounted_over_a_published_volume_is_abnormal(driver, kubelet_root, tmp_path):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    driver.node.NodePublishVolume(kubelet.publish_request(
        kubelet_root, uid, "dd", {"type": "APMSocketDirectory"}))
    _mount_elsewhere(tmp_path, target)
    condition = _stats(driver, uid)
    assert condition.abnormal and "mounted over" in condition.message
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    assert not os.path.lexists(target)
    assert sum("did not make" in line for line in driver.logs().splitlines()) == 1
