"""Identity, node info, endpoint handling, signals, metrics, health and logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid

import grpc
import pytest

import csi_driver
from csi_driver.csi.v1 import csi_pb2
from support import kubelet
from support.driver import DriverProcess, free_port
from support.snapshot import mounts_under

_RPC = csi_pb2.NodeServiceCapability.RPC


def test_identity_and_node_info(driver):
    info = driver.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "k8s.csi.datadoghq.com" and info.vendor_version == csi_driver.__version__
    caps = driver.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    assert all(c.service.type != c.service.CONTROLLER_SERVICE for c in caps.capabilities)
    assert driver.identity.Probe(csi_pb2.ProbeRequest()).ready.value is True
    assert driver.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest()).node_id == "test-node"
    node_caps = {c.rpc.type for c in driver.node.NodeGetCapabilities(
        csi_pb2.NodeGetCapabilitiesRequest()).capabilities}
    assert node_caps == {_RPC.GET_VOLUME_STATS, _RPC.VOLUME_CONDITION}


def test_node_id_falls_back_to_hostname(tmp_path, kubelet_root, agent):
    process = DriverProcess(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path,
                            env={"NODE_ID": ""}).start()
    try:
        node_id = process.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest()).node_id
        assert node_id == socket.gethostname() and node_id
    finally:
        process.stop()


def test_stale_endpoint_socket_is_replaced(tmp_path, kubelet_root, agent):
    process = DriverProcess(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path)
    os.makedirs(os.path.dirname(process.socket_path))
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(process.socket_path)
    leftover.close()  # a socket file nobody listens on, as a crash leaves it
    process.start()
    try:
        assert process.identity.Probe(csi_pb2.ProbeRequest()).ready.value
    finally:
        process.stop()


def test_second_driver_refuses_live_endpoint(driver):
    second = subprocess.run(driver.command(), capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "another process is serving on" in second.stdout + second.stderr
    assert driver.identity.Probe(csi_pb2.ProbeRequest()).ready.value


def test_sigterm_finishes_in_flight_calls_and_removes_socket(driver, kubelet_root):
    uids = [str(uuid.uuid4()) for _ in range(40)]
    for uid in uids:
        kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    outcomes: list[str] = []

    def publish(uid: str) -> None:
        try:
            driver.node.NodePublishVolume(
                kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocketDirectory"}), timeout=30)
            outcomes.append("OK")
        except grpc.RpcError as err:
            outcomes.append(err.code().name)

    threads = [threading.Thread(target=publish, args=(uid,)) for uid in uids]
    for thread in threads:
        thread.start()
    assert driver.terminate() == 0
    for thread in threads:
        thread.join()
    assert not os.path.exists(driver.socket_path)
    assert set(outcomes) <= {"OK", "UNAVAILABLE", "CANCELLED"}
    for uid in uids:
        target = kubelet.target_path(kubelet_root, uid, "dd")
        # Each call either completed (one mount) or never started (nothing on disk).
        assert len(mounts_under(target)) == (1 if os.path.exists(target) else 0)


def test_metrics_health_and_logs(tmp_path, kubelet_root, agent):
    port = free_port()
    process = DriverProcess(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path,
                            extra_args=["--metrics-port", str(port)]).start()
    try:
        uid = str(uuid.uuid4())
        kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
        process.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"}))
        with pytest.raises(grpc.RpcError):
            process.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "x", {"type": "Nope"}))
        process.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))

        base = f"http://127.0.0.1:{port}"
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert (f'datadog_csi_driver_node_publish_volume_attempts{{path="{agent.dsd_path}",'
                f'status="success",type="DSDSocket"}} 1.0') in text
        assert ('datadog_csi_driver_node_publish_volume_attempts{path="",status="unsupported",'
                'type="invalid"} 1.0') in text
        assert 'datadog_csi_driver_node_unpublish_volume_attempts{status="success"} 1.0' in text
        assert "datadog_csi_driver_node_publish_volume_duration_seconds_bucket" in text
        assert "datadog_csi_driver_stale_socket_mounts 0.0" in text
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/nothing", timeout=5)
    finally:
        process.stop()

    calls = [json.loads(line) for line in process.logs().splitlines()
             if line.startswith("{") and '"method"' in line]
    publish = next(c for c in calls if c["method"] == "NodePublishVolume" and c["outcome"] == "OK")
    assert publish["volume_id"] == kubelet.volume_id(uid, "dd")
    assert publish["type"] == "DSDSocket" and publish["target_path"].endswith("/dd/mount")
    assert isinstance(publish["duration_ms"], float)
    failed = next(c for c in calls if c["outcome"] == "INVALID_ARGUMENT")
    assert failed["level"] == "warning" and "Nope" in failed["msg"]


def test_version_and_help():
    version = subprocess.run([sys.executable, "-m", "csi_driver", "--version"], capture_output=True,
                             text=True, check=True)
    assert version.stdout.strip() == f"datadog-csi-driver {csi_driver.__version__}"
    helptext = subprocess.run([sys.executable, "-m", "csi_driver", "--help"], capture_output=True,
                              text=True, check=True).stdout
    for flag in ("--driver-name", "--csi-endpoint", "--apm-host-socket-path", "--dsd-host-socket-path",
                 "--storage-path", "--apm-enabled", "--registry-allow-list", "--kubelet-root-dir",
                 "--metrics-port", "DD_CSI_ENDPOINT"):
        assert flag in helptext


def test_bad_flag_value_exits_with_message():
    result = subprocess.run([sys.executable, "-m", "csi_driver", "--metrics-port", "http"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--metrics-port" in result.stderr


def test_sigterm_right_after_start_always_stops(tmp_path, kubelet_root, agent):
    """A SIGTERM may land on any thread (often one of gRPC's); the driver must
    still stop promptly, however soon after start-up it arrives."""
    for attempt in range(30):
        workdir = tmp_path / str(attempt)
        workdir.mkdir()
        process = DriverProcess(str(workdir), kubelet_root, agent.dsd_path,
                                agent.apm_path).start()
        try:
            assert process.terminate(timeout=10) == 0
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"driver ignored SIGTERM on start {attempt}:\n{process.logs()}")
