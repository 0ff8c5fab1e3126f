"""Waiting for the agent's socket: inotify, directories appearing one by one,
deadlines, shutdown, and what a waiting call may not be fooled by."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from csi_driver import agent_wait
from csi_driver.agent_wait import AgentWait, Found, probe
from csi_driver.config import Config, ConfigError, load
from csi_driver.csi.v1 import csi_pb2
from csi_driver.errors import RequestError
from csi_driver.inotify import IN_CREATE, Inotify
from csi_driver.sources import AgentSources
from csi_driver.validation import publish
from csi_driver.volumes import sockets
from support import kubelet


@pytest.fixture
def layout(tmp_path) -> Config:
    """Sockets two directories below one that exists: neither exists yet."""
    base = tmp_path / "run"
    base.mkdir()
    return Config(dsd_host_socket_path=str(base / "datadog" / "agent" / "dsd.socket"),
                  apm_host_socket_path=str(base / "datadog" / "agent" / "apm.socket"),
                  kubelet_root_dir=str(tmp_path / "kubelet"), node_id="unit")


@pytest.fixture
def waits(layout: Config) -> Iterator[AgentWait]:
    waiter = AgentWait(AgentSources(layout))
    yield waiter
    waiter.stop()


def _bind(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return sock


def _source(volume_type: str, config: Config):
    return sockets.resolve({"type": volume_type}, config)


def _watching(waiter: AgentWait, count: int = 1) -> None:
    """Until ``count`` paths have their watch in place."""
    deadline = threading.Event()
    for _ in range(500):
        with waiter._cond:
            placed = [w for w in waiter._paths.values() if w.wd is not None]
        if len(placed) >= count:
            return
        deadline.wait(0.01)
    raise AssertionError("the watch was never placed")


def test_the_inotify_binding_reports_a_new_entry(tmp_path):
    inotify = Inotify()
    try:
        wd = inotify.add_watch(str(tmp_path), IN_CREATE)
        (tmp_path / "new").mkdir()
        (event,) = inotify.read()
        assert (event.wd, event.name) == (wd, "new") and event.mask & IN_CREATE
        assert inotify.read() == []
        inotify.remove_watch(wd)
        inotify.remove_watch(wd)  # already gone: fine
    finally:
        inotify.close()


def test_probe_walks_without_following_symlinks(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    (tmp_path / "real" / "sock").touch()
    assert probe(str(tmp_path / "real" / "sock")) is Found.PRESENT
    assert probe(str(tmp_path / "real" / "missing")) is Found.ABSENT
    assert probe(str(tmp_path / "nothing" / "sock")) is Found.ABSENT
    assert probe(str(tmp_path / "link" / "sock")) is Found.BLOCKED


def test_a_present_socket_does_not_wait(waits, layout):
    os.makedirs(os.path.dirname(layout.dsd_host_socket_path))
    with _bind(layout.dsd_host_socket_path):
        waits.until_present(_source("DSDSocket", layout), 0.001)
    assert waits._thread is None  # no watch, no thread for a socket that is there


def test_waits_while_directories_and_then_the_socket_appear(waits, layout):
    agent_dir = os.path.dirname(layout.dsd_host_socket_path)
    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(lambda: (waits.until_present(_source("DSDSocket", layout), 60), done.set()))
        for step in (os.path.dirname(agent_dir), agent_dir):
            _watching(waits)
            assert not done.wait(0.2)
            os.mkdir(step)
        _watching(waits)
        assert not done.wait(0.2)  # the directory alone is not the socket
        with _bind(layout.dsd_host_socket_path):
            call.result(10)


def test_a_directory_volume_waits_for_the_socket_inside(waits, layout):
    agent_dir = os.path.dirname(layout.apm_host_socket_path)
    os.makedirs(agent_dir)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(waits.until_present, _source("APMSocketDirectory", layout), 60)
        _watching(waits)
        with _bind(layout.dsd_host_socket_path):  # the other socket of the directory
            with pytest.raises(TimeoutError):
                call.result(0.3)
            with _bind(layout.apm_host_socket_path):
                call.result(10)


def test_a_socket_renamed_into_place_ends_the_wait(waits, layout, tmp_path):
    os.makedirs(os.path.dirname(layout.dsd_host_socket_path))
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(waits.until_present, _source("DSDSocket", layout), 60)
        _watching(waits)
        with _bind(str(tmp_path / "elsewhere.socket")):
            os.rename(tmp_path / "elsewhere.socket", layout.dsd_host_socket_path)
            call.result(10)


def test_the_deadline_answers_unavailable_naming_what_was_waited_for(waits, layout):
    with pytest.raises(RequestError) as err:
        waits.until_present(_source("DSDSocket", layout), 0.2)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert layout.dsd_host_socket_path in err.value.message and "0.2s" in err.value.message
    assert waits._paths == {} and waits._users == {}  # nothing left watched


def test_stop_ends_every_wait_at_once(waits, layout):
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(waits.until_present, _source(t, layout), 90)
                 for t in ("DSDSocket", "APMSocket", "DSDSocket", "APMSocketDirectory")]
        _watching(waits, 2)
        waits.stop()
        for call in calls:
            with pytest.raises(RequestError) as err:
                call.result(10)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE and "stopping" in err.value.message
    with pytest.raises(RequestError, match="stopping"):
        waits.until_present(_source("DSDSocket", layout), 90)


def test_calls_waiting_for_one_socket_share_one_watch(waits, layout):
    os.makedirs(os.path.dirname(layout.dsd_host_socket_path))
    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(waits.until_present, _source("DSDSocket", layout), 60) for _ in range(8)]
        for _ in range(100):
            with waits._cond:
                if sum(w.waiters for w in waits._paths.values()) == 8:
                    break
            threading.Event().wait(0.01)
        _watching(waits)
        assert len(waits._users) == 1 and list(waits._paths) == [_awaited(waits, layout)]
        with _bind(layout.dsd_host_socket_path):
            for call in calls:
                call.result(10)


def _awaited(waits: AgentWait, layout: Config) -> str:
    return waits._sources.awaited_socket(_source("DSDSocket", layout))[1]


def test_a_symlink_instead_of_a_directory_ends_the_wait_and_is_refused(waits, layout, tmp_path):
    """The wait stops at anything that is not a real directory; opening the
    source then refuses it, so a planted symlink is never followed."""
    agent_dir = os.path.dirname(layout.dsd_host_socket_path)
    os.mkdir(os.path.dirname(agent_dir))
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    with _bind(str(decoy / "dsd.socket")), ThreadPoolExecutor(1) as pool:
        call = pool.submit(waits.until_present, _source("DSDSocket", layout), 60)
        _watching(waits)
        os.symlink(decoy, agent_dir)
        call.result(10)
        with pytest.raises(RequestError) as err:
            waits._sources.open(_source("DSDSocket", layout))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "symlink" in err.value.message


def test_a_directory_removed_under_the_watch_is_watched_again(waits, layout):
    agent_dir = os.path.dirname(layout.dsd_host_socket_path)
    os.makedirs(agent_dir)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(waits.until_present, _source("DSDSocket", layout), 60)
        _watching(waits)
        os.rmdir(agent_dir)
        os.rmdir(os.path.dirname(agent_dir))
        with pytest.raises(TimeoutError):
            call.result(0.3)
        os.makedirs(agent_dir)
        with _bind(layout.dsd_host_socket_path):
            call.result(10)


# ------------------------------------------------------------ configuration

def test_the_flag_is_bounded_below_the_kubelets_timeout():
    assert load([], {"NODE_ID": "n"}).wait_for_agent_socket == 0
    assert load(["--wait-for-agent-socket", "90s"], {"NODE_ID": "n"}).wait_for_agent_socket == 90
    assert load([], {"NODE_ID": "n", "DD_WAIT_FOR_AGENT_SOCKET": "1m"}).wait_for_agent_socket == 60
    with pytest.raises(ConfigError, match="at most 100s"):
        load(["--wait-for-agent-socket", "2m"], {"NODE_ID": "n"})
    with pytest.raises(ConfigError, match="not a duration"):
        load(["--wait-for-agent-socket", "soon"], {"NODE_ID": "n"})


def _request(layout: Config, attributes: dict[str, str]) -> csi_pb2.NodePublishVolumeRequest:
    return kubelet.publish_request(layout.kubelet_root_dir, "0b7c4a4e-6e38-4c0b-9c55-2a1f7a0e6d11", "dd",
                                   attributes)


def test_the_volume_attribute_overrides_the_flag(layout):
    attr = sockets.WAIT_ATTRIBUTE
    assert publish(_request(layout, {"type": "DSDSocket"}), layout).wait_for_agent == 0
    waiting = dataclasses.replace(layout, wait_for_agent_socket=30.0)
    assert publish(_request(layout, {"type": "DSDSocket"}), waiting).wait_for_agent == 30
    assert publish(_request(layout, {"type": "DSDSocket", attr: "0"}), waiting).wait_for_agent == 0
    assert publish(_request(layout, {"type": "APMSocketDirectory", attr: "45s"}), layout).wait_for_agent == 45


@pytest.mark.parametrize("attributes, fragment", [
    ({"type": "DSDSocket", sockets.WAIT_ATTRIBUTE: "later"}, "must be a duration"),
    ({"type": "DSDSocket", sockets.WAIT_ATTRIBUTE: "101s"}, "at most 100s"),
    ({"type": "DSDSocket", sockets.WAIT_ATTRIBUTE: "-5s"}, "must be a duration"),
    ({"type": "DatadogInjectorPreload", sockets.WAIT_ATTRIBUTE: "5s"}, "agent socket volume types only"),
])
def test_a_bad_volume_attribute_is_invalid(layout, attributes, fragment):
    request = _request(layout, attributes)
    request.readonly = True
    with pytest.raises(RequestError) as err:
        publish(request, layout)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.value.message


def test_unavailable_is_the_status_of_a_wait_that_cannot_be_watched(waits, layout, monkeypatch):
    def no_instances() -> Inotify:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(agent_wait, "Inotify", no_instances)
    with pytest.raises(RequestError) as err:
        waits.until_present(_source("DSDSocket", layout), 5)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and "max_user_instances" in err.value.message
