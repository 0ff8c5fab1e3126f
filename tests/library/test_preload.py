"""DatadogInjectorPreload: the injector's preload file, as a pod sees it."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from support.library_driver import PRELOAD, LibraryNode, in_pod, publish_error
from support.snapshot import mounts_under

LAUNCHER = "/opt/datadog-packages/datadog-apm-inject/stable/inject/launcher.preload.so\n"


@pytest.fixture
def node(tmp_path, kubelet_root, agent):
    node = LibraryNode(str(tmp_path), kubelet_root, agent.dsd_path, agent.apm_path).start()
    yield node
    node.stop()


def test_the_pod_sees_the_launcher_line_read_only(node):
    target = node.publish({"type": PRELOAD})
    seen = in_pod(target)
    assert seen["content"] == LAUNCHER
    assert {"ro", "nosuid", "nodev"} <= set(seen["mount_options"]), seen["mount_options"]
    assert seen["write_errno"] == errno.EROFS
    on_node = os.lstat(os.path.join(node.storage, "ld.so.preload"))
    assert stat.S_ISREG(on_node.st_mode) and stat.S_IMODE(on_node.st_mode) == 0o644

    node.publish({"type": PRELOAD}, pod_uid=target.split("/")[-5])  # the kubelet's retry
    assert [point for _root, point in mounts_under(target)] == [target]
    node.unpublish(target)
    assert mounts_under(target) == [] and not os.path.lexists(target)
    assert node.metric("datadog_csi_driver_node_publish_volume_attempts", type=PRELOAD,
                       path=os.path.join(node.storage, "ld.so.preload"), status="success") == 2


def test_the_file_is_written_once_and_survives_restarts(node):
    preload = os.path.join(node.storage, "ld.so.preload")
    before = os.stat(preload)
    target = node.publish({"type": PRELOAD})
    node.restart()
    assert os.stat(preload).st_ino == before.st_ino
    # Adopted at start: republishing and unpublishing know the mount as theirs.
    node.publish({"type": PRELOAD}, pod_uid=target.split("/")[-5])
    node.unpublish(target)
    assert "did not make" not in node.logs()
    assert mounts_under(target) == []


def test_a_preload_file_swapped_for_a_symlink_is_never_followed(node, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("node secret\n")
    preload = os.path.join(node.storage, "ld.so.preload")
    os.unlink(preload)
    os.symlink(secret, preload)
    target = node.publish({"type": PRELOAD})
    assert in_pod(target)["content"] == LAUNCHER
    assert stat.S_ISREG(os.lstat(preload).st_mode)
    assert secret.read_text() == "node secret\n"
    node.unpublish(target)


def test_read_write_is_refused_and_leaves_nothing(node):
    uid = "5f0e3d3c-6a5b-4c4d-8e8f-0a0b0c0d0e0f"
    code, message = publish_error(lambda: node.publish({"type": PRELOAD}, pod_uid=uid, readonly=False))
    assert code == "INVALID_ARGUMENT" and "readOnly: true" in message
    target = os.path.join(node.kubelet_root, "pods", uid, "volumes", "kubernetes.io~csi", "lib", "mount")
    assert not os.path.lexists(target)
    assert node.metric("datadog_csi_driver_node_publish_volume_attempts", type=PRELOAD,
                       path="", status="failed") == 1
