"""AgentSocketStale events, posted through the real API server with the chart's
permissions only: one on each pod whose socket-file volume an agent restart
left dead, none on the pods of directory volumes; and a driver that keeps
publishing while the API server is stopped."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from e2e.conftest import STALE_CHECK_INTERVAL
from e2e.kube import DRIVER, SOCKET_DIR, SOCKET_IN_POD, csi_volume, receive, restart_driver, wait_for

REASON = "AgentSocketStale"
WAIT = "dd.csi.datadog.com/wait-for-agent-socket"
CHECK_SECONDS = float(STALE_CHECK_INTERVAL.rstrip("s"))


def _sleeper(cluster, name: str, volume_type: str, attributes: dict[str, str] | None = None) -> dict:
    _, mount_path, _ = SOCKET_IN_POD[volume_type]
    return cluster.app_pod(name, [csi_volume("datadog", {"type": volume_type, **(attributes or {})})],
                           [{"name": "datadog", "mountPath": mount_path}], "sleep 3600")


def _stale_events(cluster, namespace: str, pod: str) -> list:
    return [e for e in cluster.events(namespace, pod) if e.reason == REASON]


def _checks_pass(count: int = 5) -> None:
    """Long enough for the driver to check its volumes ``count`` more times."""
    time.sleep(count * CHECK_SECONDS + 1)


def test_an_agent_restart_puts_one_event_on_each_pod_with_a_dead_socket(cluster, node_agent, node_driver,
                                                                          restricted):
    pods = {"dsd-file": "DSDSocket", "apm-file": "APMSocket",
            "dsd-dir": "DSDSocketDirectory", "apm-dir": "APMSocketDirectory"}
    uids = {}
    for name, volume_type in pods.items():
        cluster.create_pod(restricted, _sleeper(cluster, name, volume_type))
    for name in pods:
        uids[name] = cluster.wait_running(restricted, name).metadata.uid
    # A restarted driver knows the pods of the volumes it adopts.
    restart_driver(cluster, node_driver)
    node_agent.restart()
    for name in ("dsd-file", "apm-file"):
        wait_for(f"an {REASON} event on {name}", lambda n=name: _stale_events(cluster, restricted, n),
                 timeout=60, describe=lambda n=name: cluster.describe(restricted, n))
    _checks_pass()
    # Neither a driver restart nor another agent restart repeats an event for
    # the same dead socket.
    restart_driver(cluster, node_driver)
    node_agent.restart()
    _checks_pass()

    for name, volume_type in (("dsd-file", "DSDSocket"), ("apm-file", "APMSocket")):
        (event,) = _stale_events(cluster, restricted, name)
        assert event.type == "Warning" and event.count == 1
        assert event.involved_object.kind == "Pod" and event.involved_object.uid == uids[name]
        assert event.source.component == DRIVER and event.source.host == "test-node"
        assert event.reporting_component == DRIVER and event.reporting_instance == "test-node"
        assert f"'datadog' ({volume_type})" in event.message and "Restart the pod" in event.message
    for name in ("dsd-dir", "apm-dir"):
        assert _stale_events(cluster, restricted, name) == [], cluster.describe(restricted, name)
    assert "cannot post" not in node_driver.logs()


@contextmanager
def _api_server_stopped(cluster_env: dict[str, str]) -> Iterator[None]:
    """The API server's process, stopped (SIGSTOP): its port still accepts
    connections, and nothing answers on them."""
    with open(os.path.join(cluster_env["CLUSTER_DIR"], "records", "kube-apiserver.pid")) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _published(driver, pod_uid: str) -> list[dict]:
    lines = [json.loads(line) for line in driver.logs().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("method") == "NodePublishVolume" and line["outcome"] == "OK"
            and f"/pods/{pod_uid}/" in line.get("target_path", "")]


def test_with_the_api_server_stopped_the_driver_keeps_publishing(cluster, cluster_env, node_agent, node_driver,
                                                                 restricted):
    cluster.create_pod(restricted, _sleeper(cluster, "pinned", "DSDSocket"))
    cluster.wait_running(restricted, "pinned")
    # A pod whose volume waits for the APM socket, gone for now.
    os.unlink(node_agent.apm_path)
    payload = f"while-stopped-{uuid.uuid4().hex[:8]}"
    socket = f"{SOCKET_DIR}/apm.socket"
    waits_before = node_driver.logs().count("waiting for the agent's socket")
    late = cluster.create_pod(restricted, cluster.app_pod(
        "late", [csi_volume("apm", {"type": "APMSocket", WAIT: "90s"})], [{"name": "apm", "mountPath": socket}],
        f"dd-send stream {socket} {payload}; sleep 3600"))
    wait_for("the kubelet's publish to wait for the APM socket",
             lambda: node_driver.logs().count("waiting for the agent's socket") > waits_before, timeout=60,
             describe=lambda: cluster.describe(restricted, "late"))

    with _api_server_stopped(cluster_env):
        # The agent restarts: the pinned pod's socket dies (its event cannot be
        # posted now), and the APM socket appears for the waiting publish.
        node_agent.restart()
        wait_for("the driver to find the API server unreachable",
                 lambda: "cannot post AgentSocketStale events" in node_driver.logs(), timeout=120)
        # Published, started and connected while the API server is stopped.
        receive(node_agent.apm_received, payload, timeout=90)
        assert _published(node_driver, late.metadata.uid)

    wait_for(f"the {REASON} event once the API server is back",
             lambda: _stale_events(cluster, restricted, "pinned"), timeout=90,
             describe=lambda: node_driver.logs()[-3000:])
    _checks_pass()
    assert len(_stale_events(cluster, restricted, "pinned")) == 1
    assert _stale_events(cluster, restricted, "late") == []  # published on the live socket
    logs = node_driver.logs()
    assert logs.count("cannot post AgentSocketStale events") == 1 and "events are posted again" in logs
