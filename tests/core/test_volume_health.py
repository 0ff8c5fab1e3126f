"""NodeGetVolumeStats and the stale gauge: what a published volume really holds."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid

import pytest

from csi_driver.csi.v1 import csi_pb2
from support import kubelet
from support.driver import DriverProcess, free_port


def _stats(driver, uid: str) -> csi_pb2.VolumeCondition:
    return driver.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=kubelet.volume_id(uid, "dd"),
        volume_path=kubelet.target_path(driver.kubelet_root, uid, "dd"))).volume_condition


def _stale_gauge(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    line = next(row for row in text.splitlines()
                if row.startswith("datadog_csi_driver_stale_socket_mounts "))
    return float(line.split()[1])


@pytest.fixture
def metered(tmp_path, kubelet_root, agent):
    port = free_port()
    process = DriverProcess(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path,
                            metrics_port=port).start()
    yield process
    process.stop()


def test_recreated_socket_directory_is_reported_stale(metered, agent, kubelet_root):
    """Deleting and re-creating the agent's directory leaves directory volumes
    on the dead directory: pods get ENOENT, so stats and the gauge say so,
    also after a driver restart."""
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    metered.node.NodePublishVolume(kubelet.publish_request(
        kubelet_root, uid, "dd", {"type": "DSDSocketDirectory"}))
    assert not _stats(metered, uid).abnormal
    assert _stale_gauge(metered.metrics_port) == 0

    agent.stop()
    os.rmdir(agent.directory)
    os.mkdir(agent.directory)
    agent.start()
    condition = _stats(metered, uid)
    assert condition.abnormal and "re-created" in condition.message, condition.message
    assert _stale_gauge(metered.metrics_port) == 1

    metered.kill()
    metered.start()
    condition = _stats(metered, uid)
    assert condition.abnormal and "re-created" in condition.message, condition.message
    assert _stale_gauge(metered.metrics_port) == 1
    metered.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))


def test_mount_this_driver_did_not_make_is_abnormal_and_its_unpublish_is_logged(
        driver, kubelet_root, tmp_path):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    os.mkdir(target)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", "--bind", str(elsewhere), target], check=True)
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
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", "--bind", str(elsewhere), target], check=True)
    condition = _stats(driver, uid)
    assert condition.abnormal and "mounted over" in condition.message
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    assert not os.path.lexists(target)
    assert sum("did not make" in line for line in driver.logs().splitlines()) == 1
