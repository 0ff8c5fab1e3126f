"""The chart, installed with helm, runs the image built from this checkout on a
real node: the driver registers itself, restricted pods get their sockets, and
upgrades, crashes and the uninstall behave as an operator expects.

The tests share one release and run in file order: install, pods, upgrade,
crash, uninstall; then deploy/, the same chart rendered as plain manifests.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.kube import DRIVER, SOCKET_DIR, SOCKET_IN_POD, Cluster, csi_volume, receive, wait_for
from e2e_helm.conftest import (
    CHART,
    DAEMONSET,
    RELEASE,
    RELEASE_NAMESPACE,
    SECTION,
    daemonset_ready,
    describe_release,
    driver_pods,
)
from support.report import report_line


def _sender_pod(cluster: Cluster, volume_type: str, payload: str) -> dict[str, Any]:
    """Sends the payload, tries to write into the volume, says whether it could."""
    transport, mount_path, sock = SOCKET_IN_POD[volume_type]
    probe = sock if mount_path == sock else f"{SOCKET_DIR}/probe"
    script = (f"dd-send {transport} {sock} {payload} || exit 1; "
              f"if touch {probe} 2>/dev/null; then w=writable; else w=read-only; fi; "
              f"dd-send {transport} {sock} {payload}-$w; sleep 3600")
    return cluster.app_pod(f"app-{volume_type.lower()}-{uuid.uuid4().hex[:5]}",
                           [csi_volume("datadog", {"type": volume_type})],
                           [{"name": "datadog", "mountPath": mount_path}], script)


def _ticker(cluster: Cluster, name: str, tag: str) -> dict[str, Any]:
    """Sends tick-<n>-<tag> every 0.2 s through a directory volume."""
    sock = f"{SOCKET_DIR}/dsd.socket"
    script = (f"i=0; while true; do i=$((i+1)); dd-send dgram {sock} tick-$i-{tag} || true; "
              "sleep 0.2; done")
    return cluster.app_pod(name, [csi_volume("datadog", {"type": "DSDSocketDirectory"})],
                           [{"name": "datadog", "mountPath": SOCKET_DIR}], script)


def _driver_pod(cluster: Cluster) -> Any:
    (pod,) = driver_pods(cluster)
    return pod


def _driver_status(pod: Any) -> Any:
    (status,) = [s for s in pod.status.container_statuses or [] if s.name == "csi-node-driver"]
    return status


def _driver_logs(cluster: Cluster, pod_name: str) -> str:
    logs: str = cluster.core.read_namespaced_pod_log(pod_name, RELEASE_NAMESPACE,
                                                     container="csi-node-driver")
    return logs


def _driver_pid(cluster_env: dict[str, str]) -> int | None:
    """The driver's process on the host: its command line names this cluster's
    kubelet root, and its cgroup is under this cluster's cgroup root."""
    wanted = f"--kubelet-root-dir={cluster_env['KUBELET_ROOT']}"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{entry}/cgroup") as f:
                cgroups = f.read()
        except OSError:
            continue
        if (wanted in args and any(a.endswith("datadog-csi-driver") for a in args[:2])
                and f"{cluster_env['CGROUP_ROOT']}/" in cgroups):
            return int(entry)
    return None


def _csi_socket_answers(cluster: Cluster) -> bool:
    path = f"{cluster.kubelet_root}/plugins/datadog.csi/driver/csi.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _failed_mount(cluster: Cluster, namespace: str, name: str) -> Any:
    return next((e for e in cluster.events(namespace, name) if e.reason == "FailedMount"), None)


# ------------------------------------------------------------------ install


def test_install_runs_the_drivers_image_and_registers_it(cluster, cluster_env, driver_image, release, helm):
    ds = daemonset_ready(cluster)
    assert ds, describe_release(cluster)
    pod = _driver_pod(cluster)
    assert pod.spec.node_name == cluster.node_name  # placed by the scheduler
    (container,) = pod.spec.containers  # builtin registration: no sidecar
    assert container.image == driver_image
    # The kubelet stored the driver's NodeGetInfo answer: the node's name
    # from the Downward API.
    (entry,) = [d for d in cluster.csinode()["spec"]["drivers"] if d["name"] == DRIVER]
    assert entry["nodeID"] == cluster.node_name
    csidriver = cluster.storage.read_csi_driver(DRIVER)
    assert csidriver.metadata.labels["app.kubernetes.io/instance"] == RELEASE
    assert csidriver.spec.volume_lifecycle_modes == ["Ephemeral", "Persistent"]
    assert "registered with the kubelet" in _driver_logs(cluster, pod.metadata.name)
    listed = helm.run("list", "--namespace", RELEASE_NAMESPACE, "--short").stdout.split()
    assert listed == [RELEASE]


def test_the_drivers_token_may_post_events_and_nothing_else(cluster, cluster_env, release):
    """The chart's ServiceAccount, its ClusterRole and the token mounted into
    the driver container: what the driver posts its pod events with."""
    pod = _driver_pod(cluster)
    assert pod.spec.service_account_name == DAEMONSET
    assert "AgentSocketStale pod events are on" in _driver_logs(cluster, pod.metadata.name)
    token_file = os.path.join(cluster.kubelet_root, "pods", pod.metadata.uid, "volumes",
                              "kubernetes.io~projected", "api-token", "token")
    with open(token_file) as f:
        token = f.read()
    configuration = client.Configuration()
    configuration.host = cluster_env["APISERVER"]
    configuration.ssl_ca_cert = cluster_env["CA_CERT"]
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_driver = client.CoreV1Api(client.ApiClient(configuration))
    involved = {"apiVersion": "v1", "kind": "Pod", "namespace": RELEASE_NAMESPACE,
                "name": pod.metadata.name, "uid": pod.metadata.uid}
    as_driver.create_namespaced_event(RELEASE_NAMESPACE, {
        "metadata": {"generateName": "token-check."}, "involvedObject": involved, "type": "Normal",
        "reason": "TokenCheck", "message": "the driver's token may post events"})
    for forbidden in (lambda: as_driver.list_namespaced_pod(RELEASE_NAMESPACE),
                      lambda: as_driver.list_namespaced_secret(RELEASE_NAMESPACE),
                      lambda: as_driver.list_namespaced_event(RELEASE_NAMESPACE)):
        with pytest.raises(ApiException) as err:
            forbidden()
        assert err.value.status == 403


@pytest.mark.parametrize("volume_type", list(SOCKET_IN_POD))
def test_a_restricted_pod_gets_working_sockets(cluster, node_agent, restricted, volume_type):
    payload = f"helm-{uuid.uuid4().hex[:8]}"
    manifest = _sender_pod(cluster, volume_type, payload)
    cluster.create_pod(restricted, manifest)
    cluster.wait_running(restricted, manifest["metadata"]["name"])
    received = node_agent.received(SOCKET_IN_POD[volume_type][0])
    receive(received, payload)
    receive(received, f"{payload}-read-only")


# ------------------------------------------------------------------ upgrade


def test_upgrade_rolls_the_daemonset_while_pods_keep_delivering(request, cluster, node_agent, helm,
                                                                 release, restricted):
    tag = uuid.uuid4().hex[:6]
    cluster.create_pod(restricted, _ticker(cluster, "ticker", tag))
    cluster.wait_running(restricted, "ticker")
    first = _wait_tick(node_agent, tag)
    old_pod = _driver_pod(cluster)
    generation = cluster.apps.read_namespaced_daemon_set(DAEMONSET, RELEASE_NAMESPACE).metadata.generation

    rollout = uuid.uuid4().hex[:8]
    began = time.monotonic()
    helm.run("upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, *release,
             "--set", f"annotations.e2e/rollout={rollout}")
    wait_for("the DaemonSet to roll out the new generation",
             lambda: daemonset_ready(cluster, generation_after=generation), timeout=180,
             describe=lambda: describe_release(cluster))
    new_pod = _driver_pod(cluster)
    rolled = time.monotonic() - began
    assert new_pod.metadata.uid != old_pod.metadata.uid
    assert new_pod.metadata.annotations["e2e/rollout"] == rollout
    wait_for("the new driver to register", lambda: DRIVER in cluster.csinode_drivers(), timeout=60)

    # Every tick sent while the driver was replaced arrived: numbers without a gap.
    last = _wait_tick(node_agent, tag)
    ticks = sorted({first, last, *_drain_ticks(node_agent, tag)})
    missing = sorted(set(range(first, last + 1)) - set(ticks))
    assert not missing, f"ticks lost during the rollout: {missing[:20]}"
    report_line(request.config, SECTION,
                f"helm upgrade to the new driver pod ready in {rolled:.1f} s; "
                f"{last - first + 1} ticks sent meanwhile, none lost")

    # The new driver adopted the volume it did not publish, and unpublishes it.
    logs = _driver_logs(cluster, new_pod.metadata.name)
    assert "volumes published before this start" in logs
    cluster.delete_pod(restricted, "ticker")
    wait_for("the new driver to unpublish the ticker's volume",
             lambda: "NodeUnpublishVolume: unpublished" in _driver_logs(cluster, new_pod.metadata.name),
             timeout=90)


_received_ticks: dict[str, list[int]] = {}


def _drain_ticks(agent, tag: str) -> list[int]:
    """Tick numbers of ``tag`` received so far (other datagrams are dropped)."""
    seen = _received_ticks.setdefault(tag, [])
    while True:
        try:
            item = agent.dsd_received.get_nowait()
        except Exception:  # queue.Empty
            return seen
        match = re.fullmatch(rb"tick-(\d+)-" + tag.encode(), item)
        if match:
            seen.append(int(match.group(1)))


def _wait_tick(agent, tag: str, timeout: float = 30.0) -> int:
    """The number of the next tick of ``tag`` to arrive."""
    before = len(_drain_ticks(agent, tag))
    ticks = wait_for(f"a tick of {tag}", lambda: _drain_ticks(agent, tag)[before:], timeout,
                     interval=0.1)
    return int(ticks[-1])


# -------------------------------------------------------------------- crash


def test_a_killed_driver_is_restarted_and_a_new_pod_waits_for_it(request, cluster, cluster_env,
                                                                  node_agent, release, restricted):
    pod = _driver_pod(cluster)
    restarts = _driver_status(pod).restart_count

    # First crash: the kubelet restarts the container at once.
    pid = _driver_pid(cluster_env)
    assert pid, "no driver process of this cluster on the host"
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for("the kubelet to restart the driver container", lambda: (
        (s := _driver_status(cluster.pod(RELEASE_NAMESPACE, pod.metadata.name))).restart_count
        == restarts + 1 and s.ready), timeout=120, describe=lambda: describe_release(cluster))
    back = time.monotonic() - killed
    assert _driver_pid(cluster_env) not in (None, pid)

    # Second crash soon after: the kubelet holds the restart back (CrashLoopBackOff),
    # and a pod created meanwhile finds no driver behind the socket.
    pid = _driver_pid(cluster_env)
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for("the driver's socket to stop answering", lambda: not _csi_socket_answers(cluster),
             timeout=30, interval=0.1)
    payload = f"after-crash-{uuid.uuid4().hex[:8]}"
    manifest = _sender_pod(cluster, "DSDSocket", payload)
    name = manifest["metadata"]["name"]
    created = time.monotonic()
    cluster.create_pod(restricted, manifest)
    driver_down = not _csi_socket_answers(cluster)
    event = wait_for("a FailedMount event while the driver is down",
                     lambda: _failed_mount(cluster, restricted, name), timeout=60,
                     describe=lambda: cluster.describe(restricted, name))
    assert driver_down
    assert cluster.pod(restricted, name).status.phase == "Pending"
    cluster.wait_running(restricted, name, timeout=180)
    started = time.monotonic() - created
    receive(node_agent.dsd_received, payload)
    # The pod can run as soon as the driver serves again; the container's
    # readiness follows at the next probe (every 10 s).
    wait_for("the restarted driver container to be ready again", lambda: (
        (s := _driver_status(cluster.pod(RELEASE_NAMESPACE, pod.metadata.name))).restart_count
        == restarts + 2 and s.ready), timeout=60, describe=lambda: describe_release(cluster))
    report_line(request.config, SECTION,
                f"driver killed: container back and ready in {back:.1f} s; killed again, a pod "
                f"created meanwhile waited and ran {started:.1f} s later; its FailedMount event: "
                f"{event.message}")


# ---------------------------------------------------------------- uninstall


def test_uninstall_removes_the_release_and_later_pods_fail_visibly(request, cluster, helm, node_agent,
                                                                    release, restricted):
    helm.run("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait")
    with pytest.raises(ApiException) as err:
        cluster.apps.read_namespaced_daemon_set(DAEMONSET, RELEASE_NAMESPACE)
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        cluster.storage.read_csi_driver(DRIVER)
    assert err.value.status == 404
    # The garbage collector removes the DaemonSet's pods; the driver removes its
    # registration socket on the way out, and the kubelet forgets it.
    wait_for("the driver pods to go", lambda: not driver_pods(cluster), timeout=120,
             describe=lambda: describe_release(cluster))
    wait_for("the kubelet to drop the driver from CSINode",
             lambda: DRIVER not in cluster.csinode_drivers(), timeout=60)
    instance = f"app.kubernetes.io/instance={RELEASE}"
    assert not cluster.apps.list_daemon_set_for_all_namespaces(label_selector=instance).items
    assert not cluster.storage.list_csi_driver(label_selector=instance).items
    assert not cluster.core.list_pod_for_all_namespaces(label_selector=instance).items
    assert not cluster.core.list_namespaced_secret(
        RELEASE_NAMESPACE, label_selector=f"owner=helm,name={RELEASE}").items
    assert helm.run("list", "--all-namespaces", "--short").stdout.split() == []

    manifest = _sender_pod(cluster, "DSDSocketDirectory", "never")
    name = manifest["metadata"]["name"]
    cluster.create_pod(restricted, manifest)
    event = wait_for("a FailedMount event naming the driver",
                     lambda: _failed_mount(cluster, restricted, name), timeout=90,
                     describe=lambda: cluster.describe(restricted, name))
    assert f"driver name {DRIVER} not found in the list of registered CSI drivers" in event.message
    assert cluster.pod(restricted, name).status.phase == "Pending"
    report_line(request.config, SECTION, f"after helm uninstall, a new pod: {event.message}")


# ---------------------------------------------------------- plain manifests


def _patched_for_this_node(doc: dict[str, Any], image: str, kubelet_root: str,
                           agent_directory: str) -> dict[str, Any]:
    """What a user edits in deploy/ for a node like this one: the image, the
    kubelet root and the agent's socket directory. The registration sidecar's
    image cannot be pulled here, so the DaemonSet is turned into what the chart
    renders with registrar.mode=builtin: the driver registers itself."""
    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        if isinstance(value, str):
            return value.replace("/var/lib/kubelet", kubelet_root).replace(
                "/var/run/datadog", agent_directory)
        return value

    doc = rewrite(doc)
    if doc["kind"] != "DaemonSet":
        return doc
    spec = doc["spec"]["template"]["spec"]
    (driver,) = [c for c in spec["containers"] if c["name"] == "csi-node-driver"]
    spec["containers"] = [driver]
    driver["image"] = image
    driver["imagePullPolicy"] = "Never"
    driver["args"].append(
        f"--kubelet-registration-path={kubelet_root}/plugins/datadog.csi/driver/csi.sock")
    driver["volumeMounts"].append({"name": "registration-dir",
                                   "mountPath": f"{kubelet_root}/plugins_registry"})
    return doc


def test_the_plain_manifests_run_the_same_driver(request, cluster, node_agent, driver_image, release,
                                                 restricted):
    """deploy/, created through the API as `kubectl apply -f deploy/` would, on
    the cluster the release has just left (the test above shows nothing of it
    remains but the namespace, which helm does not remove)."""
    import yaml
    from kubernetes import utils

    docs = [doc for path in sorted((CHART.parents[1] / "deploy").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert [d["kind"] for d in docs] == ["Namespace", "CSIDriver", "ServiceAccount", "ClusterRole",
                                         "ClusterRoleBinding", "DaemonSet"]
    began = time.monotonic()
    for doc in docs:
        doc = _patched_for_this_node(doc, driver_image, cluster.kubelet_root, node_agent.directory)
        if doc["kind"] == "Namespace":
            try:
                cluster.core.create_namespace(doc)
            except ApiException as err:
                if err.status != 409:
                    raise
                cluster.core.patch_namespace(doc["metadata"]["name"], {"metadata": doc["metadata"]})
        else:
            utils.create_from_dict(cluster.core.api_client, doc)
    try:
        wait_for("the DaemonSet from deploy/ to be ready", lambda: daemonset_ready(cluster),
                 timeout=180, describe=lambda: describe_release(cluster))
        wait_for("the kubelet to list the driver in the node's CSINode",
                 lambda: DRIVER in cluster.csinode_drivers(), timeout=60)
        report_line(request.config, SECTION,
                    f"deploy/ created to driver registered in {time.monotonic() - began:.1f} s")
        payload = f"deploy-{uuid.uuid4().hex[:8]}"
        manifest = _sender_pod(cluster, "DatadogSocketsDirectory", payload)
        pod = cluster.create_pod(restricted, manifest)
        cluster.wait_running(restricted, manifest["metadata"]["name"])
        receive(node_agent.dsd_received, payload)
        receive(node_agent.dsd_received, f"{payload}-read-only")
        # Unpublished by this driver before it goes.
        cluster.delete_pod(restricted, manifest["metadata"]["name"])
        pod_dir = os.path.join(cluster.kubelet_root, "pods", pod.metadata.uid)
        wait_for("the kubelet to remove the pod's directory", lambda: not os.path.exists(pod_dir),
                 timeout=90)
    finally:
        cluster.apps.delete_namespaced_daemon_set(DAEMONSET, RELEASE_NAMESPACE)
        cluster.storage.delete_csi_driver(DRIVER)
        rbac = client.RbacAuthorizationV1Api(cluster.core.api_client)
        rbac.delete_cluster_role_binding(DAEMONSET)
        rbac.delete_cluster_role(DAEMONSET)
        cluster.core.delete_namespaced_service_account(DAEMONSET, RELEASE_NAMESPACE)
    wait_for("the driver pods to go", lambda: not driver_pods(cluster), timeout=120)
    wait_for("the kubelet to drop the driver from CSINode",
             lambda: DRIVER not in cluster.csinode_drivers(), timeout=60)
