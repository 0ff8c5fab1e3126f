"""The driver as the kubelet sees it: a real process, called over its Unix socket."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from dataclasses import dataclass

import grpc

from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
from csi_driver.sandbox import kubelet
from csi_driver.volumes.sockets import TYPES
from support.driver import DriverProcess

_clock = time.perf_counter


@dataclass
class Volume:
    volume_type: str
    pod_uid: str
    publish: csi_pb2.NodePublishVolumeRequest
    unpublish: csi_pb2.NodeUnpublishVolumeRequest


class Kubelet:
    """Lays out pod volume directories the way the kubelet does, outside any timing."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(os.path.join(root, "pods"), exist_ok=True)

    def volumes(self, count: int, types: tuple[str, ...] = TYPES) -> list[Volume]:
        made = []
        for i in range(count):
            volume_type = types[i % len(types)]
            pod_uid = str(uuid.uuid4())
            kubelet.prepare_volume_dir(self.root, pod_uid, "dd")
            made.append(Volume(volume_type, pod_uid,
                               kubelet.publish_request(self.root, pod_uid, "dd", {"type": volume_type}),
                               kubelet.unpublish_request(self.root, pod_uid, "dd")))
        return made

    def remove(self, volumes: list[Volume]) -> None:
        """The kubelet's cleanup once the pods are gone."""
        for volume in volumes:
            shutil.rmtree(os.path.join(self.root, "pods", volume.pod_uid))


def driver_command(workdir: str, kubelet_root: str, dsd_path: str, apm_path: str
                   ) -> tuple[list[str], str, str, dict[str, str]]:
    """A driver's command line, socket, log file and environment, for another program to start."""
    os.makedirs(workdir)
    driver = DriverProcess(workdir=workdir, kubelet_root=kubelet_root, dsd_path=dsd_path,
                           apm_path=apm_path)
    return driver.command(), driver.socket_path, driver.log_path, {**os.environ, "NODE_ID": "test-node"}


def start_driver(workdir: str, kubelet_root: str, dsd_path: str, apm_path: str
                 ) -> tuple[DriverProcess, float]:
    """Start a driver; return it and the time from process start to the first good Probe."""
    os.makedirs(workdir)
    driver = DriverProcess(workdir=workdir, kubelet_root=kubelet_root, dsd_path=dsd_path,
                           apm_path=apm_path)
    started = _clock()
    driver.start(wait=False)
    deadline = started + 30
    while _clock() < deadline:
        if driver.process.poll() is not None:
            raise RuntimeError(f"driver exited with {driver.process.returncode}:\n{driver.logs()}")
        if os.path.exists(driver.socket_path):
            # A fresh channel per attempt: a channel that failed once backs off for a second.
            with grpc.insecure_channel(f"unix://{driver.socket_path}") as channel:
                try:
                    csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=2)
                    return driver, _clock() - started
                except grpc.RpcError:
                    pass
        time.sleep(0.001)
    driver.stop()
    raise TimeoutError(f"driver not ready after 30 s:\n{driver.logs()}")


@dataclass
class Latencies:
    publish: dict[str, list[float]]
    unpublish: dict[str, list[float]]
    pair: dict[str, list[float]]

    @classmethod
    def empty(cls) -> Latencies:
        return cls({t: [] for t in TYPES}, {t: [] for t in TYPES}, {t: [] for t in TYPES})

    def extend(self, other: Latencies) -> None:
        for mine, theirs in ((self.publish, other.publish), (self.unpublish, other.unpublish),
                             (self.pair, other.pair)):
            for volume_type, samples in theirs.items():
                mine[volume_type].extend(samples)


def empty_pairs(driver: DriverProcess, count: int) -> list[float]:
    """Two back-to-back NodeGetInfo calls: the gRPC round trips of a pair, with no work."""
    node = driver.node
    request = csi_pb2.NodeGetInfoRequest()
    samples = []
    for _ in range(count):
        started = _clock()
        node.NodeGetInfo(request, timeout=30)
        node.NodeGetInfo(request, timeout=30)
        samples.append(_clock() - started)
    return samples


def latency(driver: DriverProcess, kube: Kubelet, per_type: int) -> Latencies:
    """One caller, one call at a time; types interleaved so noise falls on all alike."""
    node = driver.node
    result = Latencies.empty()
    volumes = kube.volumes(per_type * len(TYPES))
    try:
        for volume in volumes:
            started = _clock()
            node.NodePublishVolume(volume.publish, timeout=30)
            published = _clock()
            node.NodeUnpublishVolume(volume.unpublish, timeout=30)
            done = _clock()
            result.publish[volume.volume_type].append(published - started)
            result.unpublish[volume.volume_type].append(done - published)
            result.pair[volume.volume_type].append(done - started)
    finally:
        kube.remove(volumes)
    return result


def throughput(driver: DriverProcess, kube: Kubelet, callers: int, pairs: int) -> float:
    """Publish+unpublish pairs per second with ``callers`` concurrent callers on one channel.

    Each caller is an asyncio task on one ``grpc.aio`` channel that makes its
    pairs one after the other, so ``callers`` calls are in flight at once, as
    from the kubelet's goroutines. On a 2-CPU machine the caller's own CPU is
    taken from the driver; asyncio tasks cost about half of what as many
    threads blocking in synchronous stubs do, which makes them the closer
    stand-in for a kubelet.
    """
    volumes = kube.volumes(pairs)
    try:
        return asyncio.run(_throughput(driver.socket_path, volumes, callers))
    finally:
        kube.remove(volumes)


async def _throughput(socket_path: str, volumes: list[Volume], callers: int) -> float:
    async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
        node = csi_pb2_grpc.NodeStub(channel)
        await node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=30)  # connected

        async def caller(share: list[Volume]) -> None:
            for volume in share:
                await node.NodePublishVolume(volume.publish, timeout=60)
                await node.NodeUnpublishVolume(volume.unpublish, timeout=60)

        started = _clock()
        await asyncio.gather(*(caller(volumes[i::callers]) for i in range(callers)))
        return len(volumes) / (_clock() - started)


def cycles(driver: DriverProcess, kube: Kubelet, count: int, callers: int = 8, batch: int = 1000
           ) -> None:
    """``count`` publish/unpublish cycles, in batches so the pods directory stays small."""
    done = 0
    while done < count:
        step = min(batch, count - done)
        throughput(driver, kube, min(callers, step), step)
        done += step


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values
