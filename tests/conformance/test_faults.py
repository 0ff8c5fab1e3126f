"""Faults a node lives through: the driver killed mid-burst, the agent's socket
missing or re-created, a crashed driver's endpoint left behind."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import uuid
from collections import Counter

import grpc
import pytest

from conformance.conftest import report_line
from conformance.kubelet import Kubelet, Pod, Volume, mixed_pods, mounts_by_target, targets_of
from csi_driver.csi.v1 import csi_pb2
from support import kubelet as layout
from support import pod as pod_process
from support.agent import DemoAgent
from support.driver import DriverProcess
from support.snapshot import mount_table, tree

STALE_GAUGE = "datadog_csi_driver_stale_socket_mounts"
SOCKET_FILE_TYPES = {"DSDSocket", "APMSocket"}


def _one_pod_per_type() -> list[Pod]:
    return [Pod(str(uuid.uuid4()), f"pod-{t.lower()}", (Volume("dd", {"type": t}),))
            for t in pod_process.SOCKET_IN_VOLUME]


def _condition(driver: DriverProcess, kubelet_root: str, pod: Pod) -> csi_pb2.VolumeCondition:
    reply = driver.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=layout.volume_id(pod.uid, "dd"),
        volume_path=layout.target_path(kubelet_root, pod.uid, "dd")))
    return reply.volume_condition


def _send(kubelet_root: str, pod: Pod, agent: DemoAgent, payload: str) -> bool:
    """True when bytes from the pod reach the agent through the volume."""
    relative, transport = pod_process.SOCKET_IN_VOLUME[pod.volumes[0].attributes["type"]]
    sent = pod_process.send(transport, layout.target_path(kubelet_root, pod.uid, "dd"), payload,
                            relative)
    if sent.returncode != 0:
        return False
    return DemoAgent.expect(agent.received(transport)) == payload.encode()


# --------------------------------------------------------------- driver killed

def _unmounted_leftovers(kubelet_root: str, pods: list[Pod]) -> list[str]:
    """Targets on disk that are not mounted: what a publish cut short leaves."""
    mounted = mounts_by_target(os.path.join(kubelet_root, "pods"))
    return [t for t in targets_of(kubelet_root, pods) if os.path.lexists(t) and not mounted[t]]


def test_driver_killed_mid_burst_recovers_through_kubelet_retries(request, driver, agent,
                                                                  kubelet_root):
    pods_dir = os.path.join(kubelet_root, "pods")
    mounts_before, files_before = mount_table(), tree(pods_dir)
    pods = mixed_pods(100, agent.dsd_path, agent.apm_path, prefix="burst")
    volumes = sum(len(p.volumes) for p in pods)
    kubelet = Kubelet(kubelet_root, driver.socket_path)
    burst_error: list[BaseException] = []

    def burst() -> None:
        try:
            kubelet.start_pods(pods, threads=32)
        except BaseException as err:  # reported by the main thread
            burst_error.append(err)

    runner = threading.Thread(target=burst)
    runner.start()
    leftovers, kills = [], 0
    for threshold in (volumes // 5, volumes // 2):
        kubelet.wait_published(threshold)
        driver.kill()  # SIGKILL: no cleanup, the endpoint socket file stays
        kills += 1
        leftovers += _unmounted_leftovers(kubelet_root, pods)
        driver.start()
    runner.join()
    assert not burst_error, burst_error[0]

    # Every volume ended up published exactly once.
    assert mounts_by_target(pods_dir) == Counter({t: 1 for t in targets_of(kubelet_root, pods)})
    failed = Counter(a.code.name for a in kubelet.failures())
    report_line(request.config, f"driver SIGKILLed {kills}x during {volumes} publishes: failed "
                f"attempts by code {dict(failed)}, unmounted targets left at the kills: "
                f"{len(leftovers)}; all retried to exactly one mount each")
    assert failed, "the kills hit no publish: the burst finished before them"
    assert set(failed) <= {"UNAVAILABLE", "CANCELLED"}, failed
    assert "adopted" in driver.logs()

    kubelet.delete_pods(pods)
    assert mount_table() == mounts_before
    assert tree(pods_dir) == files_before


@pytest.mark.parametrize("volume_type", ["DSDSocket", "DSDSocketDirectory"])
def test_target_left_unmounted_by_a_crash_is_reused(driver, agent, kubelet_root, volume_type):
    """A driver killed between creating the target and mounting it leaves an
    empty file or directory; the kubelet's retry (UNAVAILABLE keeps the
    volume directory) must mount onto it."""
    pod = Pod(str(uuid.uuid4()), "crashed", (Volume("dd", {"type": volume_type}),))
    target = layout.prepare_volume_dir(kubelet_root, pod.uid, "dd")
    if volume_type.endswith("Directory"):
        os.mkdir(target, 0o750)
    else:
        open(target, "x").close()
    kubelet = Kubelet(kubelet_root, driver.socket_path)
    assert kubelet.set_up_once(pod, pod.volumes[0]).code == grpc.StatusCode.OK
    assert mounts_by_target(os.path.dirname(target)) == Counter({target: 1})
    kubelet.delete_pod(pod)
    assert os.listdir(os.path.join(kubelet_root, "pods")) == []


# ------------------------------------------------------- agent socket missing

def test_missing_agent_socket_fails_clearly_then_succeeds(request, driver, agent, kubelet_root):
    agent.stop()  # the agent is not running yet: no sockets, no directory
    shutil.rmtree(agent.directory)
    pods = [Pod(str(uuid.uuid4()), f"early-{t.lower()}", (Volume("dd", {"type": t}),))
            for t in ("DSDSocket", "APMSocket", "DSDSocketDirectory")]
    kubelet = Kubelet(kubelet_root, driver.socket_path)

    first_failures = []
    for pod, missing in zip(pods, (agent.dsd_path, agent.apm_path, agent.directory), strict=False):
        attempt = kubelet.set_up_once(pod, pod.volumes[0])
        first_failures.append(attempt)
        assert attempt.code == grpc.StatusCode.FAILED_PRECONDITION, attempt
        assert missing in attempt.message and "does not exist" in attempt.message, attempt.message
        # A final error: the kubelet removed the volume directory, nothing is mounted.
        assert not os.path.exists(layout.volume_dir(kubelet_root, pod.uid, "dd"))
    report_line(request.config, f"agent socket missing: {first_failures[0].code.name}: "
                f"{first_failures[0].message}")
    assert mounts_by_target(os.path.join(kubelet_root, "pods")) == Counter()

    # The kubelet keeps retrying; the agent comes up; every volume gets published.
    runner_error: list[BaseException] = []
    runner = threading.Thread(target=lambda: _collect(runner_error, kubelet.start_pods, pods))
    runner.start()
    os.makedirs(agent.directory)
    agent.start()
    runner.join()
    assert not runner_error, runner_error[0]
    assert mounts_by_target(os.path.join(kubelet_root, "pods")) == Counter(
        {t: 1 for t in targets_of(kubelet_root, pods)})
    for pod in pods:
        assert _send(kubelet_root, pod, agent, f"after-start-{pod.name}"), pod.name
    kubelet.delete_pods(pods)
    assert os.listdir(os.path.join(kubelet_root, "pods")) == []


def _collect(errors: list, function, *args) -> None:
    try:
        function(*args)
    except BaseException as err:
        errors.append(err)


# ------------------------------------------------------------ agent restarts

def test_agent_restart_directory_volumes_keep_working_socket_files_go_stale(
        request, metered_driver, agent, kubelet_root):
    driver = metered_driver
    pods = _one_pod_per_type()
    kubelet = Kubelet(kubelet_root, driver.socket_path)
    kubelet.start_pods(pods)
    for pod in pods:
        assert _send(kubelet_root, pod, agent, f"before-{pod.name}")
        assert not _condition(driver, kubelet_root, pod).abnormal
    assert driver.metric(STALE_GAUGE) == 0

    agent.restart()  # sockets deleted and created anew

    stale = []
    for pod in pods:
        volume_type = pod.volumes[0].attributes["type"]
        condition = _condition(driver, kubelet_root, pod)
        if volume_type in SOCKET_FILE_TYPES:
            stale.append(pod)
            assert condition.abnormal, volume_type
            assert "re-created" in condition.message and "DSDSocketDirectory" in condition.message
            assert not _send(kubelet_root, pod, agent, "into-the-dead-socket")
        else:
            assert not condition.abnormal, condition.message
            assert _send(kubelet_root, pod, agent, f"after-{pod.name}"), volume_type
    assert driver.metric(STALE_GAUGE) == len(SOCKET_FILE_TYPES)
    report_line(request.config, f"agent restarted: {len(stale)} socket-file volumes stale "
                f"({_condition(driver, kubelet_root, stale[0]).message!r}); directory volumes "
                "still deliver")

    # A kubelet restart republishes the stale volumes as they are (the pod must
    # be restarted to reconnect); deleting the pods cleans everything.
    kubelet = kubelet.restart()
    kubelet.start_pods(pods)
    assert kubelet.failures() == []
    kubelet.delete_pods(pods)
    assert driver.metric(STALE_GAUGE) == 0
    assert os.listdir(os.path.join(kubelet_root, "pods")) == []


def test_stale_socket_mounts_are_counted_across_a_driver_restart(metered_driver, agent,
                                                                 kubelet_root):
    driver = metered_driver
    pods = _one_pod_per_type() + [
        Pod(str(uuid.uuid4()), "legacy-socket", (Volume("dd", {"mode": "socket", "path": agent.dsd_path}),)),
        Pod(str(uuid.uuid4()), "readonly-apm", (Volume("dd", {"type": "APMSocket"}, readonly=True),)),
    ]
    socket_files = 4  # DSDSocket, APMSocket, legacy socket, read-only APMSocket
    kubelet = Kubelet(kubelet_root, driver.socket_path)
    kubelet.start_pods(pods)

    assert driver.terminate() == 0
    driver.start()  # a new process: it knows these volumes only from the mount table
    assert driver.metric(STALE_GAUGE) == 0
    agent.restart()
    assert driver.metric(STALE_GAUGE) == socket_files
    condition = _condition(driver, kubelet_root, pods[0])  # DSDSocket
    assert condition.abnormal and agent.dsd_path in condition.message
    assert agent.apm_path not in condition.message  # the adopted volume knows its socket

    # The kubelet republishes after its own restart: accepted, still one mount each.
    kubelet = kubelet.restart()
    kubelet.start_pods(pods)
    assert kubelet.failures() == []
    assert mounts_by_target(os.path.join(kubelet_root, "pods")) == Counter(
        {t: 1 for t in targets_of(kubelet_root, pods)})
    kubelet.delete_pods(pods)
    assert driver.metric(STALE_GAUGE) == 0
    assert os.listdir(os.path.join(kubelet_root, "pods")) == []


# ------------------------------------------------------ crashed driver endpoint

def test_crash_leaves_endpoint_socket_restart_is_clean_second_driver_refused(
        tmp_path, driver, agent, kubelet_root):
    pods = _one_pod_per_type()
    kubelet = Kubelet(kubelet_root, driver.socket_path)
    kubelet.start_pods(pods)

    driver.kill()
    assert stat.S_ISSOCK(os.lstat(driver.socket_path).st_mode)  # what a crash leaves behind
    driver.start()
    assert "removing stale endpoint socket" in driver.logs()
    assert driver.identity.Probe(csi_pb2.ProbeRequest()).ready.value

    second = DriverProcess(str(tmp_path / "second"), kubelet_root, agent.dsd_path, agent.apm_path,
                           extra_args=["--csi-endpoint", f"unix://{driver.socket_path}"])
    os.makedirs(second.workdir)
    second.start(wait=False)
    assert second.process.wait(timeout=30) != 0
    assert f"another process is serving on {driver.socket_path}" in second.logs()

    # The first driver still owns the endpoint and its volumes.
    assert driver.identity.Probe(csi_pb2.ProbeRequest()).ready.value
    assert mounts_by_target(os.path.join(kubelet_root, "pods")) == Counter(
        {t: 1 for t in targets_of(kubelet_root, pods)})
    kubelet.delete_pods(pods)
    assert os.listdir(os.path.join(kubelet_root, "pods")) == []
