"""Flags, DD_* environment variables and defaults resolve into one Config."""

from __future__ import annotations

import pytest

from csi_driver.config import Config, ConfigError, env_name, load


def test_defaults_match_the_reference_driver():
    config = load([], {"NODE_ID": "n1"})
    assert config == Config(node_id="n1")
    assert config.driver_name == "k8s.csi.datadoghq.com"
    assert config.csi_endpoint == "unix:///csi/csi.sock" and config.socket_path == "/csi/csi.sock"
    assert config.apm_host_socket_path == "/var/run/datadog/apm.socket"
    assert config.dsd_host_socket_path == "/var/run/datadog/dsd.socket"
    assert config.storage_path == "/var/lib/datadog-csi-driver"
    assert config.apm_enabled is True and config.registry_allow_list == ()
    assert config.kubelet_root_dir == "/var/lib/kubelet" and config.metrics_port == 5000


def test_environment_then_flags_win():
    env = {"DD_DSD_HOST_SOCKET_PATH": "/run/dd/dsd.sock", "DD_APM_ENABLED": "false",
           "DD_REGISTRY_ALLOW_LIST": "gcr.io/datadoghq, public.ecr.aws/datadog",
           "DD_KUBELET_ROOT_DIR": "/var/lib/k0s/kubelet/", "DD_METRICS_PORT": "0", "NODE_ID": "n"}
    config = load(["--dsd-host-socket-path", "/flag/dsd.socket"], env)
    assert config.dsd_host_socket_path == "/flag/dsd.socket"
    assert config.apm_enabled is False
    assert config.registry_allow_list == ("gcr.io/datadoghq", "public.ecr.aws/datadog")
    assert config.kubelet_root_dir == "/var/lib/k0s/kubelet" and config.metrics_port == 0


def test_env_names():
    assert env_name("--csi-endpoint") == "DD_CSI_ENDPOINT"
    assert env_name("--apm-host-socket-path") == "DD_APM_HOST_SOCKET_PATH"


@pytest.mark.parametrize("argv, fragment", [
    (["--apm-enabled", "maybe"], "--apm-enabled"),
    (["--metrics-port", "70000"], "out of range"),
    (["--csi-endpoint", "tcp://0.0.0.0:1"], "--csi-endpoint"),
    (["--kubelet-root-dir", "relative/dir"], "--kubelet-root-dir"),
    (["--log-level", "loud"], "--log-level"),
])
def test_bad_values_are_refused(argv, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load(argv, {"NODE_ID": "n"})


def test_log_level_from_reference_variable():
    assert load([], {"NODE_ID": "n", "LOG_LEVEL": "warn"}).log_level == "warning"


def test_registration_paths_must_fit_a_unix_socket():
    config = load(["--kubelet-registration-path", "/var/lib/kubelet/plugins/x/csi.sock"], {"NODE_ID": "n"})
    assert config.kubelet_registration_path == "/var/lib/kubelet/plugins/x/csi.sock"
    with pytest.raises(ConfigError, match="at most 107 bytes"):
        load(["--kubelet-registration-path", "/" + "p" * 120 + "/csi.sock"], {"NODE_ID": "n"})
    with pytest.raises(ConfigError, match="registration socket"):
        load(["--kubelet-registration-path", "/x/csi.sock", "--kubelet-root-dir", "/" + "k" * 90],
             {"NODE_ID": "n"})
    with pytest.raises(ConfigError, match="normalized absolute path"):
        load(["--kubelet-registration-path", "relative/csi.sock"], {"NODE_ID": "n"})
