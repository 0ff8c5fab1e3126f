"""The agent side of the mount: only the agent's own socket or directory is
ever mounted, opened once without following symlinks, and always read-only.

Whoever can write in the agent's socket directory (with Datadog's chart, any
pod holding a read-write directory volume) must not be able to steer a
publish to anything else: another pod's token, the driver's own CSI socket.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import threading
import uuid

import grpc
import pytest

from csi_driver import mounts
from support import kubelet, pod
from support.agent import DemoAgent
from support.driver import DriverProcess
from support.rename import exchange
from support.snapshot import mounts_under

RACE_ATTEMPTS = int(os.environ.get("SOURCE_RACE_ATTEMPTS", 600))


def _publish(driver, kubelet_root: str, volume_type: str, readonly: bool = False):
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(kubelet_root, uid, "dd")
    request = kubelet.publish_request(kubelet_root, uid, "dd", {"type": volume_type},
                                      readonly=readonly)
    return uid, target, request


def _refused(driver, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        driver.node.NodePublishVolume(request)
    return err.value


def test_socket_replaced_by_a_symlink_to_the_csi_endpoint_is_refused(driver, agent, kubelet_root):
    """A plain ``dsd.socket -> <csi endpoint>`` must not hand a pod the driver's own socket."""
    os.unlink(agent.dsd_path)
    os.symlink(driver.socket_path, agent.dsd_path)
    uid, target, request = _publish(driver, kubelet_root, "DSDSocket")
    err = _refused(driver, request)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "symlink" in err.details() and agent.dsd_path in err.details()
    assert mounts_under(target) == [] and not os.path.lexists(target)


def test_socket_replaced_by_a_symlink_to_a_token_file_is_refused(driver, agent, kubelet_root, tmp_path):
    token = tmp_path / "token"
    token.write_text("another pod's service-account token")
    os.unlink(agent.dsd_path)
    os.symlink(token, agent.dsd_path)
    _, target, request = _publish(driver, kubelet_root, "DSDSocket")
    err = _refused(driver, request)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "symlink" in err.details()
    assert mounts_under(target) == [] and not os.path.lexists(target)


def test_another_socket_hard_linked_in_its_place_is_refused(driver, agent, kubelet_root, tmp_path):
    """A name of another socket (a second link to its inode) where the agent's
    socket should be: the agent's own socket has exactly one name."""
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    impostor.bind(str(tmp_path / "impostor.socket"))
    try:
        os.unlink(agent.dsd_path)
        os.link(tmp_path / "impostor.socket", agent.dsd_path)
        _, target, request = _publish(driver, kubelet_root, "DSDSocket")
        err = _refused(driver, request)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "hard links" in err.details()
        assert mounts_under(target) == []
    finally:
        impostor.close()


def test_directory_replaced_by_a_symlink_after_start_is_refused(driver, agent, kubelet_root, tmp_path):
    """The configured directory is resolved at start-up; if it later becomes a
    symlink (to the driver's own plugin directory, here), nothing is mounted."""
    os.rename(agent.directory, agent.directory + ".moved")
    os.symlink(os.path.dirname(driver.socket_path), agent.directory)
    try:
        for volume_type in ("DSDSocketDirectory", "DSDSocket"):
            _, target, request = _publish(driver, kubelet_root, volume_type)
            err = _refused(driver, request)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
            assert "symlink" in err.details()
            assert mounts_under(target) == [] and not os.path.lexists(target)
    finally:
        os.unlink(agent.directory)
        os.rename(agent.directory + ".moved", agent.directory)


class _Swapper(threading.Thread):
    """Exchanges the agent's socket with a symlink to a token file and back, atomically."""

    def __init__(self, socket_path: str, token: str) -> None:
        super().__init__(daemon=True)
        self.path = socket_path
        self.decoy = socket_path + ".decoy"
        os.symlink(token, self.decoy)
        self.swaps = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            exchange(self.path, self.decoy)
            exchange(self.path, self.decoy)
            self.swaps += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        os.unlink(self.decoy)
        assert stat.S_ISSOCK(os.lstat(self.path).st_mode)


def test_socket_swapped_for_a_symlink_during_publishes_is_never_mounted(driver, agent, kubelet_root,
                                                                        tmp_path):
    """Between a check by name and a mount by name, a symlink can take the
    socket's place. The driver mounts the descriptor it checked, so whatever
    the interleaving, a published volume is the agent's socket or nothing."""
    token = tmp_path / "token"
    token.write_text("secret")
    real = os.stat(agent.dsd_path)
    swapper = _Swapper(agent.dsd_path, str(token))
    outcomes: dict[str, int] = {}
    wrong: list[str] = []
    swapper.start()
    try:
        for _ in range(RACE_ATTEMPTS):
            uid, target, request = _publish(driver, kubelet_root, "DSDSocket")
            try:
                driver.node.NodePublishVolume(request)
                outcome = "OK"
                mounted = os.stat(target)
                if (mounted.st_dev, mounted.st_ino) != (real.st_dev, real.st_ino):
                    wrong.append(f"{target}: mode {oct(mounted.st_mode)}")
            except grpc.RpcError as err:
                outcome = err.code().name
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            driver.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
            kubelet.remove_volume_dir(kubelet_root, uid, "dd")
    finally:
        swapper.stop()
    assert not wrong, f"mounted something other than the agent's socket: {wrong[:5]}"
    assert set(outcomes) <= {"OK", "FAILED_PRECONDITION"}, outcomes
    assert outcomes.get("OK") and outcomes.get("FAILED_PRECONDITION"), outcomes
    assert swapper.swaps > 0
    assert mounts_under(kubelet_root) == []


@pytest.mark.parametrize("volume_type", ["DSDSocket", "APMSocketDirectory"])
def test_volumes_are_read_only_and_inert_whatever_the_pod_asks(driver, agent, kubelet_root, volume_type):
    """With readOnly: false the pod still only gets to connect: it cannot chmod
    the node's agent socket, nor unlink it and bind its own in its place."""
    _, target, request = _publish(driver, kubelet_root, volume_type, readonly=False)
    driver.node.NodePublishVolume(request)
    socket_path = target if volume_type == "DSDSocket" else os.path.join(target, "apm.socket")
    with pytest.raises(OSError) as err:
        os.chmod(socket_path, 0)
    assert err.value.errno == errno.EROFS
    if volume_type.endswith("Directory"):
        with pytest.raises(OSError) as err:
            os.unlink(socket_path)
        assert err.value.errno == errno.EROFS
        impostor = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        directory_fd = os.open(target, os.O_PATH | os.O_DIRECTORY)
        try:
            with pytest.raises(OSError) as err:  # through the fd: the real path is too long to bind
                impostor.bind(f"/proc/self/fd/{directory_fd}/impostor.socket")
        finally:
            os.close(directory_fd)
            impostor.close()
        assert err.value.errno == errno.EROFS
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(mounts.entry_at(target).options)
    assert os.stat(agent.dsd_path).st_mode & 0o777 == 0o722  # untouched
    # ...and connecting still works.
    relative, transport = pod.SOCKET_IN_VOLUME[volume_type]
    assert pod.send(transport, target, "still connects", relative).returncode == 0
    assert DemoAgent.expect(agent.received(transport)) == b"still connects"


def test_symlinks_in_the_configured_prefix_are_resolved_at_start(tmp_path, kubelet_root):
    """``/var/run -> /run`` style prefixes are the node's own layout: they work,
    and the driver logs what they resolved to."""
    real = tmp_path / "real-run"
    agent = DemoAgent(str(real / "datadog")).start()
    link = tmp_path / "var-run"
    os.symlink(real, link)
    process = DriverProcess(str(tmp_path), kubelet_root,
                            dsd_path=str(link / "datadog" / "dsd.socket"),
                            apm_path=str(link / "datadog" / "apm.socket")).start()
    try:
        for volume_type in pod.SOCKET_IN_VOLUME:
            relative, transport = pod.SOCKET_IN_VOLUME[volume_type]
            uid, target, request = _publish(process, kubelet_root, volume_type)
            process.node.NodePublishVolume(request)
            assert pod.send(transport, target, volume_type, relative).returncode == 0
            assert DemoAgent.expect(agent.received(transport)) == volume_type.encode()
            process.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
    finally:
        process.stop()
        agent.stop()
    resolved = [json.loads(line) for line in process.logs().splitlines()
                if "agent socket directory resolved" in line]
    assert [(r["configured"], r["resolved"]) for r in resolved] == [
        (str(link / "datadog"), str(real / "datadog"))]


def test_socket_directory_created_after_start_is_resolved_then(tmp_path, kubelet_root):
    """On a fresh node the driver may start before the agent made its directory."""
    directory = tmp_path / "run" / "datadog"
    process = DriverProcess(str(tmp_path), kubelet_root, dsd_path=str(directory / "dsd.socket"),
                            apm_path=str(directory / "apm.socket")).start()
    try:
        uid, target, request = _publish(process, kubelet_root, "DSDSocket")
        err = _refused(process, request)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "does not exist" in err.details()
        agent = DemoAgent(str(directory)).start()
        try:
            process.node.NodePublishVolume(request)
            assert pod.send("dgram", target, "late agent").returncode == 0
            assert DemoAgent.expect(agent.dsd_received) == b"late agent"
            process.node.NodeUnpublishVolume(kubelet.unpublish_request(kubelet_root, uid, "dd"))
        finally:
            agent.stop()
    finally:
        process.stop()
    assert "does not exist yet" in process.logs()


def test_symlink_planted_where_the_directory_should_appear_is_refused(tmp_path, kubelet_root):
    """What did not exist at start-up is not resolved later: a symlink planted
    there (here, to a directory holding a token and a socket) is refused."""
    run = tmp_path / "run"
    process = DriverProcess(str(tmp_path), kubelet_root, dsd_path=str(run / "datadog" / "dsd.socket"),
                            apm_path=str(run / "datadog" / "apm" / "apm.socket")).start()
    elsewhere = DemoAgent(str(tmp_path / "elsewhere"), apm_name="apm.socket").start()
    try:
        (tmp_path / "elsewhere" / "token").write_text("secret")
        (run / "datadog").mkdir(parents=True)
        os.symlink(tmp_path / "elsewhere", run / "datadog" / "apm")
        for volume_type in ("APMSocketDirectory", "APMSocket"):
            _, target, request = _publish(process, kubelet_root, volume_type)
            err = _refused(process, request)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "symlink" in err.details()
            assert mounts_under(target) == [] and not os.path.lexists(target)
    finally:
        elsewhere.stop()
        process.stop()
