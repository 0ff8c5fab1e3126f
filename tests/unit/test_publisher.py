"""The publish procedure against an in-memory mount table: what it creates,
records, refuses and cleans up."""

from __future__ import annotations

import errno
import os
import uuid

import grpc
import pytest

from csi_driver import validation, volume_stats
from csi_driver.csi.v1 import csi_pb2
from csi_driver.errors import RequestError
from csi_driver.mounts import identity
from csi_driver.publisher import Publisher
from csi_driver.registry import PublishedVolumes
from csi_driver.sandbox import kubelet
from csi_driver.sources import AgentSources
from csi_driver.volumes.sockets import MOUNT_ATTRS


@pytest.fixture
def publisher(config, mount_table) -> Publisher:
    return Publisher(PublishedVolumes(), AgentSources(config))


def _publish(config, volume_type: str, uid: str | None = None, readonly: bool = False,
             volume_name: str = "dd"):
    uid = uid or str(uuid.uuid4())
    kubelet.prepare_volume_dir(config.kubelet_root_dir, uid, volume_name)
    request = kubelet.publish_request(config.kubelet_root_dir, uid, volume_name,
                                      {"type": volume_type}, readonly=readonly)
    return uid, validation.publish(request, config)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(RequestError) as err:
        call()
    return err.value.code


@pytest.mark.parametrize("volume_type", ["DSDSocket", "APMSocketDirectory"])
def test_publish_mounts_the_agent_source_with_its_options(config, publisher, mount_table, agent,
                                                          volume_type):
    _, req = _publish(config, volume_type, readonly=False)
    assert publisher.publish(req) is True
    (layer,) = mount_table.at(req.target.path)
    source = agent.dsd_path if volume_type == "DSDSocket" else os.path.dirname(agent.apm_path)
    assert layer.source == identity(os.stat(source)) and layer.attrs == MOUNT_ATTRS
    assert os.path.isdir(req.target.path) == volume_type.endswith("Directory")
    recorded = publisher.published.lookup(req.target.path)
    assert recorded is not None and recorded.volume_id == req.volume_id
    assert recorded.mounted == layer.source


def test_republish_is_idempotent_whatever_read_only_it_asks(config, publisher, mount_table):
    uid, req = _publish(config, "DSDSocket", readonly=False)
    assert publisher.publish(req) is True
    _, again = _publish(config, "DSDSocket", uid=uid, readonly=True)
    assert publisher.publish(again) is False
    assert len(mount_table.at(req.target.path)) == 1


def test_another_volume_or_source_on_a_mounted_target_is_refused(config, publisher, mount_table):
    uid, req = _publish(config, "DSDSocket")
    publisher.publish(req)
    other_volume = validation.Publish("csi-other", req.target, req.source, req.readonly)
    assert _code(lambda: publisher.publish(other_volume)) == grpc.StatusCode.ALREADY_EXISTS
    _, other_source = _publish(config, "APMSocket", uid=uid)
    assert _code(lambda: publisher.publish(other_source)) == grpc.StatusCode.ALREADY_EXISTS
    assert len(mount_table.at(req.target.path)) == 1


def test_a_refused_mount_leaves_nothing_behind(config, publisher, mount_table):
    _, req = _publish(config, "DSDSocketDirectory")
    mount_table.fail_next_bind = errno.EPERM
    assert _code(lambda: publisher.publish(req)) == grpc.StatusCode.INTERNAL
    assert not os.path.lexists(req.target.path)
    assert publisher.published.snapshot() == {}


def test_a_missing_agent_socket_creates_no_target(config, publisher, agent):
    agent.stop()
    _, req = _publish(config, "DSDSocket")
    assert _code(lambda: publisher.publish(req)) == grpc.StatusCode.FAILED_PRECONDITION
    assert not os.path.lexists(req.target.path)


def test_unpublish_unmounts_removes_and_forgets(config, publisher, mount_table):
    uid, req = _publish(config, "DSDSocket")
    publisher.publish(req)
    unpublish = validation.unpublish(kubelet.unpublish_request(config.kubelet_root_dir, uid, "dd"),
                                     config)
    assert publisher.unpublish(unpublish) is True
    assert mount_table.stacks == {} and not os.path.lexists(req.target.path)
    assert publisher.published.snapshot() == {}
    assert publisher.unpublish(unpublish) is False  # already gone
    kubelet.remove_volume_dir(config.kubelet_root_dir, uid, "dd")
    assert publisher.unpublish(unpublish) is False  # parent gone too


def test_a_recreated_agent_socket_keeps_the_volume_and_reports_it(config, publisher, agent):
    uid, req = _publish(config, "DSDSocket")
    publisher.publish(req)
    agent.restart()  # new inode at the same path
    _, again = _publish(config, "DSDSocket", uid=uid)
    assert publisher.publish(again) is False  # still this volume, now stale
    response = volume_stats.stats(req.volume_id, req.target, publisher.published, publisher.sources,
                                  config)
    assert response.volume_condition.abnormal
    assert "re-created" in response.volume_condition.message
    assert volume_stats.count_stale(publisher.published, publisher.sources) == 1


def test_volume_stats_say_normal_and_why(config, publisher):
    _, req = _publish(config, "DSDSocketDirectory")
    publisher.publish(req)
    response = volume_stats.stats(req.volume_id, req.target, publisher.published, publisher.sources,
                                  config)
    assert not response.volume_condition.abnormal
    assert "live agent socket directory" in response.volume_condition.message
    assert {u.unit for u in response.usage} == {csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES}


@pytest.mark.parametrize("replacement", ["a file inside", "a symlink instead"])
def test_unpublish_leaves_a_target_that_is_no_longer_an_empty_directory(
        config, publisher, mount_table, tmp_path, monkeypatch, caplog, replacement):
    """After the unmount, rmdir is what decides: it refuses a directory that was
    filled, and anything that stopped being a directory since it was looked at."""
    uid, req = _publish(config, "DSDSocketDirectory")
    publisher.publish(req)
    unpublish = validation.unpublish(kubelet.unpublish_request(config.kubelet_root_dir, uid, "dd"),
                                     config)
    looked_at = os.stat(req.target.path)
    real_unmount = mount_table.unmount

    def unmount_then_change(fd: int) -> None:
        real_unmount(fd)
        if replacement == "a file inside":
            open(os.path.join(req.target.path, "written-by-someone"), "w").close()
        else:
            os.rmdir(req.target.path)
            os.symlink(tmp_path, req.target.path)

    monkeypatch.setattr("csi_driver.mounts.unmount", unmount_then_change)
    # The symlink case also needs the race: it appears after the leaf was looked at.
    monkeypatch.setattr("csi_driver.targets.lstat_leaf", lambda parent_fd, leaf: looked_at)
    assert publisher.unpublish(unpublish) is True
    assert os.path.lexists(req.target.path) and os.path.isdir(tmp_path)
    assert "not an empty mount point after unmount; left in place" in caplog.text
