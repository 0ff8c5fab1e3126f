"""The agent's side: only the configured socket or directory, opened without
following symlinks, resolved once."""

from __future__ import annotations

import os
import socket

import grpc
import pytest

from csi_driver.config import Config
from csi_driver.errors import RequestError
from csi_driver.mounts import identity
from csi_driver.sources import AgentSources
from csi_driver.volumes import Kind, VolumeSource
from csi_driver.volumes.sockets import resolve
from support.agent import DemoAgent


def _source(config: Config, volume_type: str) -> VolumeSource:
    source = resolve({"type": volume_type}, config)
    assert source is not None
    return source


def _refusal(sources: AgentSources, source: VolumeSource) -> str:
    with pytest.raises(RequestError) as err:
        sources.open(source)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    return err.value.message


def test_opens_the_socket_and_its_directory_by_descriptor(config, agent):
    sources = AgentSources(config)
    with sources.open(_source(config, "DSDSocket")) as opened:
        assert opened.identity == identity(os.stat(agent.dsd_path)) and opened.still_linked()
    with sources.open(_source(config, "APMSocketDirectory")) as opened:
        assert opened.identity == identity(os.stat(agent.directory))


def test_a_symlink_a_second_name_or_another_type_is_refused(config, agent, tmp_path):
    sources = AgentSources(config)
    dsd = _source(config, "DSDSocket")
    os.unlink(agent.dsd_path)
    os.symlink(agent.apm_path, agent.dsd_path)  # a socket, but through a symlink
    assert "symlink" in _refusal(sources, dsd)
    os.unlink(agent.dsd_path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.bind(str(tmp_path / "other.socket"))
    os.link(tmp_path / "other.socket", agent.dsd_path)
    assert "hard links" in _refusal(sources, dsd)
    other.close()
    os.unlink(agent.dsd_path)
    open(agent.dsd_path, "w").close()
    assert "not a Unix socket" in _refusal(sources, dsd)
    os.unlink(agent.dsd_path)
    assert "does not exist" in _refusal(sources, dsd)
    assert sources.live_identity(dsd) is None


def test_only_configured_directories_are_opened(config):
    sources = AgentSources(config)
    assert "not one of the configured" in _refusal(sources, VolumeSource("x", "/etc", Kind.DIRECTORY))
    assert "not one of the configured" in _refusal(
        sources, VolumeSource("x", "/etc/shadow", Kind.SOCKET))


def test_prefix_symlinks_resolve_at_start_and_later_ones_are_refused(tmp_path):
    real = tmp_path / "real-run"
    (real / "datadog").mkdir(parents=True)
    os.symlink(real, tmp_path / "var-run")
    config = Config(dsd_host_socket_path=str(tmp_path / "var-run" / "datadog" / "dsd.socket"),
                    apm_host_socket_path=str(tmp_path / "var-run" / "datadog" / "late" / "apm.socket"),
                    node_id="unit")
    sources = AgentSources(config)
    assert sources.resolved(str(tmp_path / "var-run" / "datadog")) == str(real / "datadog")
    # Missing at start: taken as written under the resolved prefix.
    assert sources.resolved(str(tmp_path / "var-run" / "datadog" / "late")) == str(
        real / "datadog" / "late")
    agent = DemoAgent(str(real / "datadog")).start()
    try:
        with sources.open(_source(config, "DSDSocketDirectory")) as opened:
            assert opened.identity == identity(os.stat(real / "datadog"))
        os.symlink(tmp_path, real / "datadog" / "late")  # appears later, as a symlink
        assert "symlink" in _refusal(sources, _source(config, "APMSocketDirectory"))
    finally:
        agent.stop()
