"""Publishes that wait for the agent's socket, against the real driver process:
a node whose agent comes up after the driver and the first pods."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest

from csi_driver.mounts import identity
from support import kubelet
from support.driver import DriverProcess
from support.report import report_line
from support.snapshot import mounts_under

WAIT = "dd.csi.datadog.com/wait-for-agent-socket"


class Node:
    """A node without its agent yet: the DogStatsD socket's directory does not
    exist; the APM socket is there, in a directory of its own."""

    def __init__(self, tmp_path, kubelet_root: str) -> None:
        self.dsd_dir = str(tmp_path / "run" / "datadog")
        self.dsd_path = os.path.join(self.dsd_dir, "dsd.socket")
        apm_dir = tmp_path / "run" / "apm"
        apm_dir.mkdir(parents=True)
        self.apm = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.apm.bind(str(apm_dir / "apm.socket"))
        self.apm.listen(1)
        self.dsd: socket.socket | None = None
        self.kubelet_root = kubelet_root
        self.driver = DriverProcess(str(tmp_path), kubelet_root, self.dsd_path, str(apm_dir / "apm.socket"),
                                    extra_args=["--wait-for-agent-socket", "60s"])

    def start_agent(self) -> None:
        """The agent's DaemonSet pod arrives: its directory, then its socket."""
        os.makedirs(self.dsd_dir)
        self.dsd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dsd.bind(self.dsd_path)

    def publish(self, attributes: dict[str, str], uid: str | None = None) -> tuple[str, Future]:
        uid = uid or str(uuid.uuid4())
        kubelet.prepare_volume_dir(self.kubelet_root, uid, "dd")
        request = kubelet.publish_request(self.kubelet_root, uid, "dd", attributes)
        return (kubelet.target_path(self.kubelet_root, uid, "dd"),
                POOL.submit(self.driver.node.NodePublishVolume, request, timeout=115))

    def waiting_calls(self) -> int:
        return self.driver.logs().count("waiting for the agent's socket")

    def close(self) -> None:
        self.driver.stop()
        for sock in (self.apm, self.dsd):
            if sock is not None:
                sock.close()


POOL = ThreadPoolExecutor(8)


@pytest.fixture
def node(tmp_path, kubelet_root):
    node = Node(tmp_path, kubelet_root)
    node.driver.start()
    yield node
    node.close()


def _until(what: str, check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _code(call: Future) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call.result(60)
    return err.value.code(), err.value.details()


def test_a_publish_waits_for_the_agent_while_other_volumes_publish(request, node):
    began = time.monotonic()
    target, waiting = node.publish({"type": "DSDSocket"})
    _until("the publish to wait", lambda: node.waiting_calls() == 1)
    # Meanwhile another pod's volume, whose socket is there, publishes at once.
    other_target, other = node.publish({"type": "APMSocket"})
    other.result(30)
    assert mounts_under(other_target)
    time.sleep(2)  # the agent takes its time
    assert not waiting.done() and not mounts_under(target)
    appeared = time.monotonic()
    node.start_agent()
    waiting.result(30)
    published = time.monotonic()
    assert identity(os.stat(target)) == identity(os.stat(node.dsd_path))  # the live socket, mounted
    report_line(request.config, "waiting for the agent", f"a publish waited {appeared - began:.1f} s for the "
                f"agent's socket and returned {(published - appeared) * 1000:.0f} ms after it appeared")


def test_a_directory_volume_waits_for_the_socket_inside_its_directory(node):
    os.makedirs(node.dsd_dir)  # the agent made its directory, not its socket yet
    target, waiting = node.publish({"type": "DSDSocketDirectory"})
    _until("the publish to wait", lambda: node.waiting_calls() == 1)
    assert not waiting.done()
    node.dsd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    node.dsd.bind(node.dsd_path)
    waiting.result(30)
    assert os.path.exists(os.path.join(target, "dsd.socket"))


def test_past_the_deadline_the_answer_is_unavailable_and_nothing_is_left(node, kubelet_root):
    target, waiting = node.publish({"type": "DSDSocket", WAIT: "1s"})
    code, message = _code(waiting)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"waited 1s for the Datadog Agent's socket {node.dsd_path}" in message
    assert not os.path.lexists(target) and not mounts_under(kubelet_root)
    # The kubelet's retry, once the agent is up, publishes.
    node.start_agent()
    _, retry = node.publish({"type": "DSDSocket", WAIT: "1s"}, uid=target.split("/")[-5])
    retry.result(30)
    assert mounts_under(target)


def test_without_waiting_a_missing_socket_fails_at_once(node):
    _, call = node.publish({"type": "DSDSocket", WAIT: "0s"})
    code, message = _code(call)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "does not exist on this node" in message
    assert node.waiting_calls() == 0


def test_sigterm_ends_the_waits_and_the_driver_exits(node):
    calls = [node.publish({"type": "DSDSocket"})[1] for _ in range(3)]
    _until("the publishes to wait", lambda: node.waiting_calls() == 3)
    node.driver.process.send_signal(signal.SIGTERM)
    # Well before the 60 s of the waits and the 30 s grace period for calls.
    assert node.driver.process.wait(timeout=25) == 0
    for call in calls:
        code, message = _code(call)
        assert code == grpc.StatusCode.UNAVAILABLE and "stopping" in message
    assert not os.path.exists(node.driver.socket_path)


def test_a_symlink_appearing_instead_of_the_directory_is_refused(node, tmp_path, kubelet_root):
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as impostor:
        impostor.bind(str(decoy / "dsd.socket"))
        target, waiting = node.publish({"type": "DSDSocket"})
        _until("the publish to wait", lambda: node.waiting_calls() == 1)
        os.symlink(decoy, node.dsd_dir)
        code, message = _code(waiting)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "symlink" in message and node.dsd_dir in message
    assert not mounts_under(kubelet_root) and not os.path.lexists(target)
