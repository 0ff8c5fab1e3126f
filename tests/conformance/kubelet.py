"""The kubelet's side of an inline CSI volume, call for call.

Builds on ``support.kubelet`` (volume id formula, target layout, requests with
the pod-info attributes) and adds what the kubelet's CSI volume plugin and its
operation executor do around each call:

- SetUp: create the volume directory (0750) and ``vol_data.json``, dial the
  driver, call NodePublishVolume. On a *final* error (anything but
  CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED), if
  the target is not a mount point, remove it, ``vol_data.json`` and the volume
  directory (the kubelet's ``removeMountDir``).
- TearDown: NodeUnpublishVolume, then ``removeMountDir``.
- Every failed operation is retried with exponential backoff.
- Each call dials a fresh connection, as the kubelet's CSI client does, so a
  restarted driver is reached on its next attempt.
- Deleting a pod tears its volumes down, then removes the pod directory
  without recursion: the kubelet refuses to delete a pod directory that still
  holds volume paths, and so does this harness (it raises).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from csi_driver.csi.v1 import csi_pb2_grpc
from support import kubelet as layout
from support.snapshot import mount_table

# The kubelet's isFinalError: these codes leave the operation's outcome
# uncertain, so the volume directory is kept for the retry.
TRANSIENT = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED}
CALL_TIMEOUT = 30.0  # the kubelet allows 2 minutes; nothing here takes that long


@dataclass(frozen=True)
class Volume:
    name: str
    attributes: dict[str, str]
    readonly: bool = False


@dataclass(frozen=True)
class Pod:
    uid: str
    name: str
    volumes: tuple[Volume, ...]
    namespace: str = "default"


@dataclass(frozen=True)
class Attempt:
    op: str  # "publish" or "unpublish"
    pod_uid: str
    volume: str
    code: grpc.StatusCode
    message: str


@dataclass
class Backoff:
    """Exponential backoff per operation, as the kubelet's, but scaled down."""

    initial: float = 0.02
    factor: float = 2.0
    cap: float = 0.5
    give_up_after: float = 60.0


class OperationFailed(AssertionError):
    pass


@dataclass
class Kubelet:
    root: str
    socket_path: str
    backoff: Backoff = field(default_factory=Backoff)
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._succeeded = threading.Condition(self._lock)
        self.published = 0

    @property
    def pods_dir(self) -> str:
        return os.path.join(self.root, "pods")

    def restart(self) -> Kubelet:
        """A new kubelet process on the same root: no memory, same disk."""
        return Kubelet(self.root, self.socket_path, self.backoff)

    # ------------------------------------------------------------ calls

    def _call(self, op: str, pod: Pod, volume: Volume, request) -> Attempt:
        with grpc.insecure_channel(f"unix://{self.socket_path}") as channel:
            node = csi_pb2_grpc.NodeStub(channel)
            method = node.NodePublishVolume if op == "publish" else node.NodeUnpublishVolume
            try:
                method(request, timeout=CALL_TIMEOUT)
                attempt = Attempt(op, pod.uid, volume.name, grpc.StatusCode.OK, "")
            except grpc.RpcError as err:
                attempt = Attempt(op, pod.uid, volume.name, err.code(), err.details() or "")
        with self._lock:
            self.attempts.append(attempt)
            if op == "publish" and attempt.code == grpc.StatusCode.OK:
                self.published += 1
                self._succeeded.notify_all()
        return attempt

    def set_up_once(self, pod: Pod, volume: Volume) -> Attempt:
        """One SetUp: volume directory, vol_data.json, NodePublishVolume, cleanup on final error."""
        layout.prepare_volume_dir(self.root, pod.uid, volume.name)
        attempt = self._call("publish", pod, volume, layout.publish_request(
            self.root, pod.uid, volume.name, volume.attributes, readonly=volume.readonly,
            pod_name=pod.name, namespace=pod.namespace))
        if attempt.code != grpc.StatusCode.OK and attempt.code not in TRANSIENT:
            self.remove_mount_dir(pod, volume)
        return attempt

    def tear_down_once(self, pod: Pod, volume: Volume) -> Attempt:
        attempt = self._call("unpublish", pod, volume,
                             layout.unpublish_request(self.root, pod.uid, volume.name))
        if attempt.code == grpc.StatusCode.OK:
            self.remove_mount_dir(pod, volume)
        return attempt

    def remove_mount_dir(self, pod: Pod, volume: Volume) -> None:
        """The kubelet's removeMountDir: only when the target is not mounted."""
        target = layout.target_path(self.root, pod.uid, volume.name)
        if is_mount_point(target):
            return
        try:
            os.remove(target)
        except IsADirectoryError:
            os.rmdir(target)
        except FileNotFoundError:
            pass
        directory = layout.volume_dir(self.root, pod.uid, volume.name)
        for path, remove in ((os.path.join(directory, "vol_data.json"), os.remove),
                             (directory, os.rmdir)):
            try:
                remove(path)
            except FileNotFoundError:
                pass

    def _retry(self, once, pod: Pod, volume: Volume) -> list[Attempt]:
        delay, deadline, history = self.backoff.initial, time.monotonic() + self.backoff.give_up_after, []
        while True:
            attempt = once(pod, volume)
            history.append(attempt)
            if attempt.code == grpc.StatusCode.OK:
                return history
            if time.monotonic() > deadline:
                raise OperationFailed(f"{attempt.op} of {pod.uid}/{volume.name} kept failing: "
                                      + "; ".join(f"{a.code.name}: {a.message}" for a in history[-3:]))
            time.sleep(delay)
            delay = min(delay * self.backoff.factor, self.backoff.cap)

    def set_up(self, pod: Pod, volume: Volume) -> list[Attempt]:
        return self._retry(self.set_up_once, pod, volume)

    def tear_down(self, pod: Pod, volume: Volume) -> list[Attempt]:
        return self._retry(self.tear_down_once, pod, volume)

    # ------------------------------------------------------------- pods

    def start_pods(self, pods: list[Pod], threads: int = 32) -> None:
        """Set up every volume of every pod concurrently, retrying until each succeeds."""
        _run_all(threads, [(self.set_up, pod, volume) for pod in pods for volume in pod.volumes])

    def delete_pods(self, pods: list[Pod], threads: int = 32) -> None:
        _run_all(threads, [(self.delete_pod, pod) for pod in pods])

    def delete_pod(self, pod: Pod) -> None:
        for volume in pod.volumes:
            self.tear_down(pod, volume)
        pod_dir = os.path.join(self.pods_dir, pod.uid)
        for directory in (os.path.join(pod_dir, "volumes", "kubernetes.io~csi"),
                          os.path.join(pod_dir, "volumes"), pod_dir):
            try:
                os.rmdir(directory)  # ENOTEMPTY here is a leftover: let it fail the test
            except FileNotFoundError:
                pass

    def wait_published(self, count: int, timeout: float = 60.0) -> None:
        with self._succeeded:
            if not self._succeeded.wait_for(lambda: self.published >= count, timeout):
                raise TimeoutError(f"only {self.published} of {count} publishes succeeded")

    def failures(self, op: str = "publish") -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if a.op == op and a.code != grpc.StatusCode.OK]


def _run_all(threads: int, jobs: list[tuple]) -> None:
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubelet") as pool:
        futures = [pool.submit(job[0], *job[1:]) for job in jobs]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


# ------------------------------------------------------------------ checks

def mounts_by_target(pods_dir: str) -> Counter:
    """How many mounts sit on each path under ``pods_dir``."""
    prefix = pods_dir.rstrip("/") + "/"
    return Counter(point for _root, point in mount_table() if point.startswith(prefix))


def is_mount_point(path: str) -> bool:
    return mounts_by_target(os.path.dirname(path)).get(path, 0) > 0


def targets_of(root: str, pods: list[Pod]) -> list[str]:
    return [layout.target_path(root, pod.uid, volume.name) for pod in pods for volume in pod.volumes]


def mixed_pods(count: int, dsd_path: str, apm_path: str, prefix: str = "app") -> list[Pod]:
    """``count`` pods with two volumes each, cycling through every volume form."""
    import uuid

    dsd_forms = [{"type": "DSDSocket"}, {"type": "DSDSocketDirectory"},
                 {"type": "DatadogSocketsDirectory"}, {"mode": "socket", "path": dsd_path}]
    apm_forms = [{"type": "APMSocketDirectory"}, {"type": "APMSocket"},
                 {"mode": "local", "path": os.path.dirname(apm_path)}]
    pods = []
    for i in range(count):
        pods.append(Pod(str(uuid.uuid4()), f"{prefix}-{i}", (
            Volume("dsd", dsd_forms[i % len(dsd_forms)], readonly=i % 2 == 1),
            Volume("apm", apm_forms[i % len(apm_forms)], readonly=i % 3 == 2),
        )))
    return pods
