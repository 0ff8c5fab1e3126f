"""The driver accepts the arguments and environment the chart gives it.

The rendered container arguments and plain environment variables are fed to
the driver's own configuration loader, so a renamed flag, or a value the
driver would refuse, fails here rather than in a crash-looping DaemonSet.
"""

from __future__ import annotations

import pytest

from csi_driver import config as driver_config

from .chart_helpers import driver, only, render
from .scenarios import SCENARIOS


def loaded_config(scenario: str):
    values, extra_args = SCENARIOS[scenario]
    c = driver(only(render(values, extra_args), "DaemonSet"))
    environ = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    environ["NODE_ID"] = "node-a"  # filled in from spec.nodeName by the kubelet
    return driver_config.load(c["args"], environ)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_driver_accepts_rendered_configuration(scenario: str) -> None:
    loaded = loaded_config(scenario)
    assert loaded.driver_name == "k8s.csi.datadoghq.com"
    assert loaded.csi_endpoint == "unix:///csi/csi.sock"
    assert loaded.metrics_port == 5000
    values = SCENARIOS[scenario][0]
    assert loaded.kubelet_root_dir == values.get("kubeletRootDir", "/var/lib/kubelet")


def test_driver_reads_apm_settings_from_the_environment() -> None:
    assert loaded_config("apm-disabled").apm_enabled is False
    assert loaded_config("allow-list").registry_allow_list == ("gcr.io/datadoghq", "public.ecr.aws/datadog")
    assert loaded_config("defaults").registry_allow_list == ()


def test_driver_gets_the_configured_socket_paths() -> None:
    loaded = loaded_config("separate-socket-dirs")
    assert loaded.apm_host_socket_path == "/var/run/datadog-apm/apm.socket"
    assert loaded.dsd_host_socket_path == "/var/run/datadog-dsd/dsd.socket"
