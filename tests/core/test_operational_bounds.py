"""What a client of the metrics port, a pod author or a broken node can make
the driver hold: bounded series, bounded threads, bounded start-up."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import grpc
import pytest

from csi_driver import recovery
from csi_driver.metrics import HttpServer
from support import kubelet
from support.driver import DriverProcess, free_port


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])


def _get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
        return reply.status, reply.read().decode()


# ------------------------------------------------------------ label values

def test_unknown_volume_types_share_one_label_value(metered_driver, kubelet_root):
    """A pod author's raw ``type`` never becomes a label value: 300 distinct
    values must not make 300 series."""
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    for i in range(300):
        request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": f"Bogus{i}-{'x' * 40}"})
        with pytest.raises(grpc.RpcError):
            metered_driver.node.NodePublishVolume(request)
    for attributes in ({}, {"mode": "nonsense", "path": "/x"}, {"type": "DSDSocket\u2028"}):
        with pytest.raises(grpc.RpcError):
            metered_driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", attributes))
    _, text = _get(metered_driver.metrics_port, "/metrics")
    attempts = [line for line in text.splitlines()
                if line.startswith("datadog_csi_driver_node_publish_volume_attempts{")]
    assert sorted(attempts) == sorted([
        'datadog_csi_driver_node_publish_volume_attempts{path="",status="failed",type="invalid"} 1.0',
        'datadog_csi_driver_node_publish_volume_attempts{path="",status="unsupported",type="invalid"} 302.0',
    ]), attempts
    assert "Bogus" not in text


# ---------------------------------------------------------- HTTP endpoint

def test_idle_connections_hold_no_threads_and_are_dropped(metered_driver):
    """Idle TCP connections cost neither a thread each nor forever."""
    pid = metered_driver.process.pid
    before = _threads(pid)
    idle = []
    for _ in range(200):
        idle.append(socket.create_connection(("127.0.0.1", metered_driver.metrics_port), timeout=5))
    time.sleep(0.5)
    assert _threads(pid) <= before + 2, f"{_threads(pid)} threads with 200 idle connections"
    # The server drops a connection that sends nothing within its request timeout.
    idle[0].settimeout(HttpServer.REQUEST_TIMEOUT + 10)
    started = time.monotonic()
    assert idle[0].recv(1) == b""
    assert time.monotonic() - started < HttpServer.REQUEST_TIMEOUT + 5
    for conn in idle:
        conn.close()
    assert _get(metered_driver.metrics_port, "/healthz")[0] == 200


def test_metrics_address_limits_where_it_listens(tmp_path, kubelet_root, agent):
    port = free_port()
    process = DriverProcess(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path,
                            extra_args=["--metrics-port", str(port),
                                        "--metrics-address", "127.0.0.1"]).start()
    try:
        assert _get(port, "/healthz")[0] == 200
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                                   text=True, check=True).stdout.split()
        assert f"127.0.0.1:{port}" in listening, listening
    finally:
        process.stop()


def test_metrics_port_in_use_stops_start_up_cleanly(tmp_path, kubelet_root, agent):
    taken = socket.create_server(("", 0))
    port = taken.getsockname()[1]
    process = DriverProcess(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path,
                            extra_args=["--metrics-port", str(port)])
    try:
        process.start(wait=False)
        assert process.process.wait(timeout=20) == 1
    finally:
        taken.close()
    errors = [json.loads(line) for line in process.logs().splitlines()
              if line.startswith("{") and json.loads(line)["level"] == "error"]
    assert len(errors) == 1 and f"port {port}" in errors[0]["msg"], process.logs()
    assert "Traceback" not in process.logs()
    assert not os.path.lexists(process.socket_path)


# -------------------------------------------------------------------- logs

def test_log_lines_never_hold_unicode_line_breaks(driver, kubelet_root):
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"})
    request.volume_id = "csi-a\u2028b\u0085c\u2029d"
    driver.node.NodePublishVolume(request)
    raw = open(driver.log_path, "rb").read()
    for separator in ("\u2028", "\u2029", "\u0085"):
        assert separator.encode() not in raw
    lines = raw.decode().splitlines()  # splits on every Unicode line break
    entries = [json.loads(line) for line in lines if line]
    assert any(entry.get("volume_id") == request.volume_id for entry in entries)


# ---------------------------------------------------------------- start-up

def test_csi_endpoint_longer_than_a_unix_socket_allows_is_a_config_error(tmp_path):
    endpoint = "unix:///" + "d" * 120 + "/csi.sock"
    result = subprocess.run([sys.executable, "-m", "csi_driver", "--csi-endpoint", endpoint],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "at most 107 bytes" in result.stderr and "Traceback" not in result.stderr


def test_volume_data_is_read_as_untrusted(tmp_path):
    """vol_data.json: only a regular file of at most 16 KiB, never a device or FIFO."""
    directory = tmp_path / "volume"
    directory.mkdir()
    data = directory / "vol_data.json"
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        data.write_text(json.dumps({"driverName": kubelet.DRIVER}))
        assert recovery.read_volume_data(fd) == {"driverName": kubelet.DRIVER}
        data.write_text(json.dumps({"driverName": kubelet.DRIVER, "pad": "x" * 17000}))
        assert recovery.read_volume_data(fd) == {}
        data.unlink()
        os.mknod(data, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's device
        assert recovery.read_volume_data(fd) == {}
        data.unlink()
        os.mkfifo(data)
        assert recovery.read_volume_data(fd) == {}
        data.unlink()
        os.symlink(tmp_path / "elsewhere.json", data)
        (tmp_path / "elsewhere.json").write_text(json.dumps({"driverName": kubelet.DRIVER}))
        assert recovery.read_volume_data(fd) == {}
    finally:
        os.close(fd)


@pytest.mark.parametrize("planted", ["fifo", "dev-zero", "huge"])
def test_unreadable_volume_data_does_not_stall_start_up(driver, kubelet_root, planted):
    """Recovery reads the kubelet's vol_data.json of every mounted volume:
    a FIFO there must not hang start-up, nor /dev/zero exhaust memory."""
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    driver.node.NodePublishVolume(kubelet.publish_request(kubelet_root, uid, "dd", {"type": "DSDSocket"}))
    driver.kill()
    data = os.path.join(kubelet.volume_dir(kubelet_root, uid, "dd"), "vol_data.json")
    os.unlink(data)
    if planted == "fifo":
        os.mkfifo(data)
    elif planted == "dev-zero":
        os.symlink("/dev/zero", data)
    else:
        with open(data, "w") as out:
            json.dump({"driverName": kubelet.DRIVER, "padding": "x" * (1 << 20)}, out)
    started = time.monotonic()
    driver.start(wait=False)
    driver.wait_ready(timeout=20)
    assert time.monotonic() - started < 20
    with open(f"/proc/{driver.process.pid}/status") as status:
        rss_kb = int(next(line for line in status if line.startswith("VmRSS:")).split()[1])
    assert rss_kb < 200_000
    # Adopted all the same (by inode), so unpublish cleans up.
    driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    assert not os.path.lexists(kubelet.target_path(kubelet_root, uid, "dd"))
