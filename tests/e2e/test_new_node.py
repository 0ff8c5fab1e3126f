"""A new node: the driver is up before the agent, and pods arrive before the
agent's sockets exist. With --wait-for-agent-socket they wait in
ContainerCreating, then run and reach the agent as soon as it is up."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

from e2e.kube import SOCKET_IN_POD, csi_volume, restart_driver, wait_for
from support.report import report_line

AGENT_LATE_SECONDS = 10


@contextmanager
def _driver_with(cluster, driver, args: list[str]) -> Iterator[None]:
    saved = list(driver.extra_args)
    driver.extra_args = saved + args
    restart_driver(cluster, driver)
    try:
        yield
    finally:
        driver.extra_args = saved
        restart_driver(cluster, driver)


def _creating(cluster, namespace: str, name: str) -> bool:
    """Pending, its container not created yet (what kubectl shows as ContainerCreating)."""
    pod = cluster.pod(namespace, name)
    statuses = pod.status.container_statuses or []
    return pod.status.phase == "Pending" and bool(statuses) and all(
        s.state.waiting is not None and s.state.waiting.reason == "ContainerCreating" for s in statuses)


def _receive_all(queue: Any, payloads: set[str], timeout: float) -> None:
    """Until every one of ``payloads`` arrived, in whatever order."""
    deadline = time.monotonic() + timeout
    missing = set(payloads)
    while missing:
        try:
            missing.discard(queue.get(timeout=max(0.05, deadline - time.monotonic())).decode(errors="replace"))
        except Empty:
            raise TimeoutError(f"{sorted(missing)} never reached the agent within {timeout:.0f}s") from None


def test_pods_created_before_the_agent_wait_for_it_then_reach_it(request, cluster, node_agent, node_driver,
                                                                   restricted):
    node_agent.stop()
    os.rmdir(node_agent.directory)  # a new node: not even the agent's directory yet
    try:
        with _driver_with(cluster, node_driver, ["--wait-for-agent-socket", "60s"]):
            waits_before = node_driver.logs().count("waiting for the agent's socket")
            payloads = {}
            for form in ("DSDSocketDirectory", "DSDSocket"):
                name = f"early-{form.lower()}"
                payloads[name] = f"first-{uuid.uuid4().hex[:8]}"
                transport, mount_path, socket = SOCKET_IN_POD[form]
                cluster.create_pod(restricted, cluster.app_pod(
                    name, [csi_volume("datadog", {"type": form})], [{"name": "datadog", "mountPath": mount_path}],
                    f"dd-send {transport} {socket} {payloads[name]} || exit 1; sleep 3600"))
            wait_for("both publishes to wait for the agent", lambda: node_driver.logs().count(
                "waiting for the agent's socket") >= waits_before + 2, timeout=60)
            for name in payloads:
                wait_for(f"{name} in ContainerCreating", lambda n=name: _creating(cluster, restricted, n),
                         timeout=30, describe=lambda n=name: cluster.describe(restricted, n))
            time.sleep(AGENT_LATE_SECONDS)
            for name in payloads:
                assert _creating(cluster, restricted, name), cluster.describe(restricted, name)

            # The agent's pod starts: its directory, then its sockets.
            started = time.monotonic()
            os.mkdir(node_agent.directory)
            os.chmod(node_agent.directory, 0o777)
            node_agent.start()
            for name in payloads:
                cluster.wait_running(restricted, name, timeout=60)
            _receive_all(node_agent.dsd_received, set(payloads.values()), timeout=60)
            report_line(request.config, "end-to-end results",
                        f"new node: 2 pods waited {AGENT_LATE_SECONDS} s for the agent, then ran and "
                        f"delivered their first datagram {time.monotonic() - started:.1f} s after it started")
            assert "FailedMount" not in " ".join(cluster.describe(restricted, name) for name in payloads)
    finally:
        if not os.path.isdir(node_agent.directory):
            os.mkdir(node_agent.directory)
            os.chmod(node_agent.directory, 0o777)
        if not os.path.exists(node_agent.dsd_path):
            node_agent.start()
