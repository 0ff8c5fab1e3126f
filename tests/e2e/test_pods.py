"""Pods in a `restricted` namespace get the agent's sockets from the real
kubelet, and only through this driver."""

from __future__ import annotations

import os
import uuid

import pytest
from kubernetes.client.rest import ApiException

from e2e.kube import SOCKET_DIR, SOCKET_IN_POD, csi_volume, receive, wait_for

# Every form a pod spec can take: the four types, the deprecated alias, the
# schema before `type`.
FORMS = {
    **{volume_type: {"type": volume_type} for volume_type in SOCKET_IN_POD},
    "legacy-socket": None,  # {"mode": "socket", "path": <dsd socket>}, filled in below
    "legacy-local": None,   # {"mode": "local", "path": <dsd directory>}
}


def _attributes(form: str, agent) -> dict[str, str]:
    if form == "legacy-socket":
        return {"mode": "socket", "path": agent.dsd_path}
    if form == "legacy-local":
        return {"mode": "local", "path": os.path.dirname(agent.dsd_path)}
    return {"type": form}


def _in_pod(form: str) -> tuple[str, str, str]:
    return SOCKET_IN_POD.get({"legacy-socket": "DSDSocket", "legacy-local": "DSDSocketDirectory"}
                             .get(form, form))


def _sender(transport: str, socket: str, payload: str, write_probe: str) -> str:
    """Send the payload, then say whether the volume could be written to."""
    return (f"dd-send {transport} {socket} {payload} || exit 1; "
            f"if touch {write_probe} 2>/dev/null; then w=writable; else w=read-only; fi; "
            f"dd-send {transport} {socket} {payload}-$w; sleep 3600")


def _pod_for(cluster, form: str, agent, payload: str, read_only: bool = True) -> dict:
    transport, mount_path, socket = _in_pod(form)
    probe = socket if mount_path == socket else f"{SOCKET_DIR}/probe"
    return cluster.app_pod(
        f"app-{form.lower()}-{uuid.uuid4().hex[:5]}",
        [csi_volume("datadog", _attributes(form, agent), read_only=read_only)],
        [{"name": "datadog", "mountPath": mount_path}],
        _sender(transport, socket, payload, probe))


@pytest.mark.parametrize("read_only", [True, False], ids=["readOnly", "readWrite"])
@pytest.mark.parametrize("form", list(FORMS))
def test_a_restricted_pod_reaches_the_agent_read_only(cluster, node_agent, restricted, form, read_only):
    """The headline: a non-root pod with every capability dropped, in a namespace
    enforcing `restricted`, talks to the agent through each volume form; the
    volume is read-only inside the container whatever readOnly says."""
    payload = f"hello-{uuid.uuid4().hex[:8]}"
    manifest = _pod_for(cluster, form, node_agent, payload, read_only)
    cluster.create_pod(restricted, manifest)
    cluster.wait_running(restricted, manifest["metadata"]["name"])
    received = node_agent.received(_in_pod(form)[0])
    receive(received, payload)
    receive(received, f"{payload}-read-only")


def test_restricted_refuses_the_same_pod_with_a_hostpath(cluster, node_agent, restricted):
    manifest = cluster.app_pod("with-hostpath", [{"name": "datadog", "hostPath": {
        "path": node_agent.directory, "type": "Directory"}}],
        [{"name": "datadog", "mountPath": SOCKET_DIR}], "sleep 3600")
    with pytest.raises(ApiException) as err:
        cluster.create_pod(restricted, manifest)
    assert err.value.status == 403
    assert "violates PodSecurity" in err.value.body and "hostPath" in err.value.body


def test_deleting_a_pod_unpublishes_its_volumes(cluster, node_agent, node_driver, restricted):
    payload = f"bye-{uuid.uuid4().hex[:8]}"
    manifest = _pod_for(cluster, "DSDSocketDirectory", node_agent, payload)
    pod = cluster.create_pod(restricted, manifest)
    cluster.wait_running(restricted, manifest["metadata"]["name"])
    receive(node_agent.dsd_received, payload)
    pod_dir = os.path.join(cluster.kubelet_root, "pods", pod.metadata.uid)
    assert _mounts_under(pod_dir, csi_only=True)
    cluster.delete_pod(restricted, manifest["metadata"]["name"])
    wait_for("the kubelet to remove the pod's directory", lambda: not os.path.exists(pod_dir),
             timeout=90, describe=lambda: f"mounts left: {_mounts_under(pod_dir)}")
    assert "NodeUnpublishVolume: unpublished" in node_driver.logs()


def _mounts_under(directory: str, csi_only: bool = False) -> list[str]:
    from csi_driver import mounts

    return [e.mount_point for e in mounts.mount_table() if e.mount_point.startswith(directory + "/")
            and (not csi_only or "kubernetes.io~csi" in e.mount_point)]


def test_an_unknown_type_fails_the_mount_with_the_drivers_message(cluster, node_agent, restricted):
    manifest = cluster.app_pod("bad-type", [csi_volume("datadog", {"type": "Nope"})],
                               [{"name": "datadog", "mountPath": SOCKET_DIR}], "sleep 3600")
    cluster.create_pod(restricted, manifest)
    event = wait_for("a FailedMount event", lambda: next(
        (e for e in cluster.events(restricted, "bad-type") if e.reason == "FailedMount"), None),
        timeout=90, describe=lambda: cluster.describe(restricted, "bad-type"))
    assert "unknown volume type 'Nope'" in event.message
    assert cluster.pod(restricted, "bad-type").status.phase == "Pending"


def test_a_missing_agent_socket_holds_the_pod_until_the_agent_is_up(cluster, node_agent, restricted):
    node_agent.stop()
    try:
        payload = f"late-{uuid.uuid4().hex[:8]}"
        manifest = _pod_for(cluster, "DSDSocket", node_agent, payload)
        name = manifest["metadata"]["name"]
        cluster.create_pod(restricted, manifest)
        event = wait_for("a FailedMount event", lambda: next(
            (e for e in cluster.events(restricted, name) if e.reason == "FailedMount"), None),
            timeout=90, describe=lambda: cluster.describe(restricted, name))
        assert "does not exist on this node" in event.message
        assert cluster.pod(restricted, name).status.phase == "Pending"
    finally:
        node_agent.start()
    cluster.wait_running(restricted, name, timeout=180)
    receive(node_agent.dsd_received, payload)
