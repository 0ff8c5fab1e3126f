"""Built-in kubelet plugin registration (--kubelet-registration-path)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import grpc
import pytest

from csi_driver.pluginregistration.v1 import pluginregistration_pb2 as api
from csi_driver.pluginregistration.v1 import pluginregistration_pb2_grpc as api_grpc
from support.driver import DriverProcess

HOST_ENDPOINT = "/var/lib/kubelet/plugins/k8s.csi.datadoghq.com/csi.sock"


@pytest.fixture
def short_kubelet_root():
    """A kubelet root short enough for <root>/plugins_registry/<driver>-reg.sock to be a
    valid Unix socket path (pytest's own temporary directories are too deep)."""
    root = tempfile.mkdtemp(prefix="kubelet-", dir="/tmp")
    os.mkdir(os.path.join(root, "pods"))
    yield root
    shutil.rmtree(root)


def test_the_driver_answers_the_kubelets_plugin_watcher(tmp_path, short_kubelet_root, agent):
    kubelet_root = short_kubelet_root
    process = DriverProcess(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path,
                            extra_args=["--kubelet-registration-path", HOST_ENDPOINT]).start()
    registration = os.path.join(kubelet_root, "plugins_registry", "k8s.csi.datadoghq.com-reg.sock")
    try:
        assert os.path.exists(registration)
        with grpc.insecure_channel(f"unix://{registration}") as channel:
            stub = api_grpc.RegistrationStub(channel)
            info = stub.GetInfo(api.InfoRequest(), timeout=5)
            assert (info.type, info.name, info.endpoint, list(info.supported_versions)) == (
                "CSIPlugin", "k8s.csi.datadoghq.com", HOST_ENDPOINT, ["1.0.0"])
            stub.NotifyRegistrationStatus(api.RegistrationStatus(
                plugin_registered=False, error="version 9 is not supported"), timeout=5)
            stub.NotifyRegistrationStatus(api.RegistrationStatus(plugin_registered=True), timeout=5)
            # Only the registration API is served there, the CSI services are not.
            probe = channel.unary_unary("/csi.v1.Identity/Probe")
            try:
                probe(b"", timeout=5)
                raise AssertionError("the registration socket answered a CSI call")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert process.terminate() == 0
    assert not os.path.exists(registration)  # gone: the kubelet deregisters the driver
    lines = [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
    refused = next(line for line in lines if "refused the registration" in line["msg"])
    assert refused["level"] == "error" and "version 9" in refused["msg"]
    assert any(line["msg"] == "registered with the kubelet" for line in lines)


def test_without_the_flag_nothing_registers(driver, kubelet_root):
    assert not os.path.exists(os.path.join(kubelet_root, "plugins_registry"))
