"""The node's moving parts restart under running pods: the driver, the agent;
and the kubelet calls the driver the way the driver expects."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import uuid

from e2e.conftest import CLUSTER_SCRIPT
from e2e.kube import DRIVER, SOCKET_DIR, csi_volume, receive, wait_for
from support.report import report_line


def _ticker(cluster, name: str, volume_type: str, tag: str) -> dict:
    """A pod that sends tick-<n>-<tag> every half second through its volume."""
    socket = f"{SOCKET_DIR}/dsd.socket"
    mount = socket if volume_type == "DSDSocket" else SOCKET_DIR
    script = (f"i=0; while true; do i=$((i+1)); dd-send dgram {socket} tick-$i-{tag} || true; "
              "sleep 0.5; done")
    return cluster.app_pod(name, [csi_volume("datadog", {"type": volume_type})],
                           [{"name": "datadog", "mountPath": mount}], script)


def _call_lines(driver, method: str) -> list[dict]:
    lines = [json.loads(line) for line in driver.logs().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("method") == method]


def test_the_kubelet_registered_the_driver_and_asked_who_it_is(cluster, node_driver):
    assert DRIVER in cluster.csinode_drivers()
    (entry,) = [d for d in cluster.csinode()["spec"]["drivers"] if d["name"] == DRIVER]
    assert entry["nodeID"] == "test-node"  # NodeGetInfo's answer, as the kubelet stored it
    assert "registered with the kubelet" in node_driver.logs()
    assert _call_lines(node_driver, "NodeGetInfo")


def test_pods_keep_delivering_through_a_driver_restart(cluster, node_agent, node_driver, restricted):
    tag = uuid.uuid4().hex[:6]
    cluster.create_pod(restricted, _ticker(cluster, "ticker", "DSDSocketDirectory", tag))
    cluster.wait_running(restricted, "ticker")
    receive(node_agent.dsd_received, "tick-", prefix=True)
    assert node_driver.terminate() == 0
    node_driver.start()
    wait_for("the driver to register again", lambda: DRIVER in cluster.csinode_drivers(), timeout=60)
    # Still delivering after the restart, and the restarted driver adopted the volume.
    receive(node_agent.dsd_received, "tick-", prefix=True, timeout=30)
    assert "volumes published before this start" in node_driver.logs()
    cluster.delete_pod(restricted, "ticker")
    # The pod is gone from the API at once (no grace); the kubelet unpublishes after.
    wait_for("the kubelet to unpublish the adopted volume", lambda: [
        line for line in _call_lines(node_driver, "NodeUnpublishVolume")
        if line["outcome"] == "OK" and line["msg"].endswith(": unpublished")], timeout=90)


def test_an_agent_restart_is_reported_for_socket_file_volumes(cluster, node_agent, node_driver, restricted):
    """A socket-file volume pins the dead socket once the agent re-creates it; the
    kubelet's periodic NodeGetVolumeStats learns it is abnormal."""
    tag = uuid.uuid4().hex[:6]
    cluster.create_pod(restricted, _ticker(cluster, "pinned", "DSDSocket", tag))
    pod = cluster.wait_running(restricted, "pinned")
    receive(node_agent.dsd_received, "tick-", prefix=True)
    node_agent.restart()
    target = f"{cluster.kubelet_root}/pods/{pod.metadata.uid}/volumes/kubernetes.io~csi/datadog/mount"

    def abnormal_stats() -> list[dict]:
        return [line for line in _call_lines(node_driver, "NodeGetVolumeStats")
                if line.get("target_path") == target and line["msg"].startswith(
                    "NodeGetVolumeStats: abnormal")]

    found = wait_for("the kubelet to ask for the volume's stats and hear it is abnormal",
                     abnormal_stats, timeout=150, interval=2)
    assert "re-created its socket" in found[-1]["msg"]


def test_a_burst_of_pods_all_start_and_leave_nothing(request, cluster, node_agent, node_driver, restricted):
    count = 30
    created: dict[str, float] = {}
    for i in range(count):
        name = f"burst-{i:02d}"
        manifest = cluster.app_pod(
            name,
            [csi_volume("dsd", {"type": "DSDSocketDirectory"}), csi_volume("apm", {"type": "APMSocket"})],
            [{"name": "dsd", "mountPath": SOCKET_DIR},
             {"name": "apm", "mountPath": "/var/run/apm/apm.socket"}],
            "sleep 3600")
        created[name] = time.monotonic()
        cluster.create_pod(restricted, manifest)
    running: dict[str, float] = {}

    def all_running() -> bool:
        for pod in cluster.core.list_namespaced_pod(restricted).items:
            if pod.status.phase == "Running" and pod.metadata.name not in running:
                running[pod.metadata.name] = time.monotonic()
        return len(running) == count

    wait_for(f"{count} pods to run", all_running, timeout=300, interval=0.5,
             describe=lambda: f"{len(running)} running")
    delays = sorted(running[name] - created[name] for name in created)
    report_line(request.config, "end-to-end results",
                f"burst: {count} pods x 2 volumes created at once, create to Running: "
                f"p50 {statistics.median(delays):.1f} s, max {delays[-1]:.1f} s")
    pod_dirs = [f"{cluster.kubelet_root}/pods/{p.metadata.uid}"
                for p in cluster.core.list_namespaced_pod(restricted).items]
    for name in created:
        cluster.delete_pod(restricted, name, wait=False)
    for name in created:
        cluster.wait_pod_gone(restricted, name)
    wait_for("the kubelet to remove every pod directory",
             lambda: not any(os.path.exists(d) for d in pod_dirs), timeout=120)


def test_volumes_survive_a_kubelet_restart(cluster, cluster_env, node_agent, node_driver, restricted):
    """The kubelet restarts under a running pod, reconstructs its volume from
    disk, and later unpublishes it through the driver as if nothing happened."""
    tag = uuid.uuid4().hex[:6]
    cluster.create_pod(restricted, _ticker(cluster, "survivor", "DSDSocketDirectory", tag))
    pod = cluster.wait_running(restricted, "survivor")
    receive(node_agent.dsd_received, "tick-", prefix=True)
    restarted = subprocess.run([str(CLUSTER_SCRIPT), "restart-kubelet", cluster_env["CLUSTER_DIR"]],
                               capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr
    receive(node_agent.dsd_received, "tick-", prefix=True, timeout=30)
    assert cluster.wait_running(restricted, "survivor").metadata.uid == pod.metadata.uid
    pod_dir = f"{cluster.kubelet_root}/pods/{pod.metadata.uid}"
    cluster.delete_pod(restricted, "survivor")
    wait_for("the kubelet to remove the pod's directory", lambda: not os.path.exists(pod_dir),
             timeout=120)
