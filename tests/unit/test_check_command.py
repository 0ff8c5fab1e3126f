"""``datadog-csi-driver check`` on the command line, beside the driver's own flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from csi_driver import cli
from csi_driver.check.command import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_check_is_a_subcommand_of_the_same_script(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["check", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: datadog-csi-driver check")
    assert "--patch" in out and "Exit code: 0 nothing found" in out


def test_the_drivers_help_names_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "datadog-csi-driver check [-n NAMESPACE]..." in out
    assert "--csi-endpoint" in out  # the driver's flags, as before


def test_the_driver_never_loads_the_kubernetes_client():
    code = ("import sys; from csi_driver import cli; from csi_driver.config import load; load([]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'yaml') "
            "or m.startswith('csi_driver.check')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          env={"NODE_ID": "n", "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "[]"


def test_socket_paths_and_driver_name_default_to_the_drivers_environment():
    args = build_parser({"DD_DSD_HOST_SOCKET_PATH": "/run/agent/dsd.sock", "DD_DRIVER_NAME": "other.example.com"}
                        ).parse_args([])
    assert args.dsd_host_socket_path == "/run/agent/dsd.sock"
    assert args.apm_host_socket_path == "/var/run/datadog/apm.socket"
    assert args.driver_name == "other.example.com"
    assert build_parser({"DD_DSD_HOST_SOCKET_PATH": "/env"}).parse_args(
        ["--dsd-host-socket-path", "/flag"]).dsd_host_socket_path == "/flag"


def test_namespaces_repeat_and_exclude_all_namespaces():
    assert build_parser({}).parse_args(["-n", "a", "--namespace", "b"]).namespaces == ["a", "b"]
    with pytest.raises(SystemExit) as done:
        build_parser({}).parse_args(["-n", "a", "-A"])
    assert done.value.code == 2


@pytest.mark.parametrize("argv", [["--page-size", "0"], ["--output", "xml"], ["--dsd-host-socket-path", "dsd.sock"],
                                  ["--driver-name", ""]])
def test_bad_flags_exit_2_before_any_request(argv, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["check", *argv])
    assert done.value.code == 2
    assert "datadog-csi-driver check: error:" in capsys.readouterr().err


def test_missing_credentials_exit_2_with_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["check", "--kubeconfig", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"datadog-csi-driver check: no usable credentials ({tmp_path / 'none'})")
    assert "pass --kubeconfig or --context" in err


def test_an_api_server_that_does_not_answer_exits_2(tmp_path, capsys):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                          "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
                          "users: [{name: u, user: {token: t}}]\n"
                          "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
    assert cli.main(["check", "--kubeconfig", str(kubeconfig)]) == 2
    captured = capsys.readouterr()
    assert "cannot reach the API server at http://127.0.0.1:1" in captured.err
    assert captured.out == ""


def test_credentials_in_a_pod_unless_a_kubeconfig_is_named(tmp_path, monkeypatch):
    from kubernetes import config

    from csi_driver.check import kube

    token = tmp_path / "token"
    token.write_text("t")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_TOKEN", str(token))

    def in_cluster(client_configuration):
        client_configuration.host = "https://in-cluster.example:443"

    monkeypatch.setattr(config, "load_incluster_config", in_cluster)
    assert kube.KubeApi().server == "https://in-cluster.example:443"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                          "clusters: [{name: k, cluster: {server: 'https://named.example:6443'}}]\n"
                          "users: [{name: u, user: {token: t}}]\n"
                          "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
    assert kube.KubeApi(str(kubeconfig)).server == "https://named.example:6443"
