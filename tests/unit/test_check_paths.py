"""Which host paths reach the agent's and the container runtimes' sockets."""

from __future__ import annotations

import pytest

from csi_driver.check.paths import Reach, agent_sockets, aliased, below, normalize, reach, runtime_sockets_reached
from csi_driver.check.replacement import sockets_reached

DSD = "/var/run/datadog/dsd.socket"
SOCKETS = agent_sockets(DSD, "/var/run/datadog/apm.socket")


@pytest.mark.parametrize(("given", "normal"), [
    ("/var/run/datadog/", "/var/run/datadog"),
    ("//var//run/./datadog", "/var/run/datadog"),
    ("/var/lib/../run/datadog", "/var/run/datadog"),
    ("/../..", "/"),
    ("/", "/"),
    ("var/run", "/var/run"),
])
def test_paths_are_normalised(given, normal):
    assert normalize(given) == normal


@pytest.mark.parametrize(("host", "expected"), [
    (DSD, Reach.SAME),
    ("/var/run/datadog/dsd.socket/", Reach.SAME),
    ("/var/run/datadog", Reach.ABOVE),
    ("/var/run", Reach.ABOVE),
    ("/var", Reach.ABOVE),
    ("/", Reach.ABOVE),
    ("/var/lib/../run/datadog", Reach.ABOVE),
    ("/run/datadog", Reach.ABOVE),  # /var/run is /run on the node
    ("/run/datadog/dsd.socket", Reach.SAME),
    ("/var/run/data", Reach.NONE),  # a prefix of the name is not a directory above it
    ("/var/run/datadog/apm.socket", Reach.NONE),
    ("/var/run/datadog/dsd.socket/x", Reach.NONE),
    ("/var/lib", Reach.NONE),
])
def test_a_host_path_reaches_the_socket_its_directory_or_above(host, expected):
    assert reach(host, DSD) is expected


def test_aliases_are_told_apart_from_plain_matches():
    assert aliased("/run/datadog", DSD)
    assert not aliased("/var/run/datadog", DSD)
    assert not aliased("/", DSD)
    assert not aliased("/var/lib", DSD)


def test_below_is_the_rest_of_the_way_whatever_the_spelling():
    assert below(DSD, "/var/run") == "datadog/dsd.socket"
    assert below("/var/run/datadog", "/run") == "datadog"
    assert below(DSD, DSD) == "."


def test_which_agent_sockets_a_path_reaches():
    assert [s.name for s in sockets_reached("/var/run", SOCKETS)] == ["dsd", "apm"]
    assert [s.name for s in sockets_reached(DSD, SOCKETS)] == ["dsd"]
    assert sockets_reached("/var/log", SOCKETS) == ()
    apart = agent_sockets("/var/run/datadog/dsd.socket", "/opt/apm/apm.socket")
    assert [s.name for s in sockets_reached("/var/run", apart)] == ["dsd"]
    assert [s.name for s in sockets_reached("/", apart)] == ["dsd", "apm"]


@pytest.mark.parametrize(("host", "sockets"), [
    ("/var/run/docker.sock", ("/var/run/docker.sock",)),
    ("/run/containerd/containerd.sock", ("/run/containerd/containerd.sock",)),
    ("/run/containerd", ("/run/containerd/containerd.sock",)),
    ("/var/run/crio/", ("/var/run/crio/crio.sock",)),
    # Wherever a runtime puts it, by its file name.
    ("/var/snap/microk8s/common/run/containerd.sock", ("/var/snap/microk8s/common/run/containerd.sock",)),
    ("/var/run/datadog", ()),
    ("/var/lib/docker", ()),
])
def test_runtime_sockets_by_name_or_known_place(host, sockets):
    assert runtime_sockets_reached(host) == sockets


def test_a_directory_above_reaches_every_runtime_socket_spelled_from_it():
    reached = runtime_sockets_reached("/var/run")
    assert "/var/run/docker.sock" in reached and "/var/run/containerd/containerd.sock" in reached
    assert all(path.startswith("/var/run/") for path in reached)
    assert "/run/docker.sock" in runtime_sockets_reached("/")
