"""The driver as a real process on a temporary Unix socket, with a gRPC client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import grpc
from prometheus_client.parser import text_string_to_metric_families

from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc


def free_port() -> int:
    """A TCP port nothing listens on right now, for the driver's metrics server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DriverProcess:
    workdir: str
    kubelet_root: str
    dsd_path: str
    apm_path: str
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    endpoint_name: str = "csi.sock"
    metrics_port: int = 0  # 0: no metrics and health server
    process: subprocess.Popen | None = None
    _channel: grpc.Channel | None = None

    @property
    def socket_path(self) -> str:
        return os.path.join(self.workdir, "plugin", self.endpoint_name)

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "driver.log")

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "csi_driver",
            "--csi-endpoint", f"unix://{self.socket_path}",
            "--kubelet-root-dir", self.kubelet_root,
            "--dsd-host-socket-path", self.dsd_path,
            "--apm-host-socket-path", self.apm_path,
            "--storage-path", os.path.join(self.workdir, "storage"),
            "--metrics-port", str(self.metrics_port),
            *self.extra_args,
        ]

    def start(self, wait: bool = True) -> DriverProcess:
        env = {**os.environ, "NODE_ID": "test-node", **self.env}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait:
            try:
                self.wait_ready()
            except BaseException:  # a driver that never got ready must not outlive the test
                self.kill()
                raise
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"driver exited with {self.process.returncode}:\n{self.logs()}")
            if os.path.exists(self.socket_path):
                try:
                    self.identity.Probe(csi_pb2.ProbeRequest(), timeout=1)
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.02)
        raise TimeoutError(f"driver not ready after {timeout}s:\n{self.logs()}")

    def metric(self, name: str) -> float:
        """A sample's value from the driver's /metrics (started with a ``metrics_port``)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        raise AssertionError(f"{name} not exposed:\n{text}")

    def logs(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.socket_path}")
        return self._channel

    @property
    def identity(self) -> csi_pb2_grpc.IdentityStub:
        return csi_pb2_grpc.IdentityStub(self.channel)

    @property
    def node(self) -> csi_pb2_grpc.NodeStub:
        return csi_pb2_grpc.NodeStub(self.channel)

    def close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def terminate(self, timeout: float = 35.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.close_channel()
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.close_channel()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()
        self.close_channel()
