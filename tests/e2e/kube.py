"""The end-to-end suite's view of the cluster: the API through the `kubernetes`
client, pods shaped as the `restricted` Pod Security level requires, and waits
that say what they waited for when they time out (``support.polling.wait_for``,
re-exported here for the suites)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from support.polling import wait_for

DRIVER = "k8s.csi.datadoghq.com"
APP_IMAGE = "localhost/e2e/app:1"
SOCKET_DIR = "/var/run/datadog"
# Where a pod finds the agent's socket for each volume form: the volume is
# mounted at the socket's own path for socket files, at its directory else.
SOCKET_IN_POD = {
    "DSDSocket": ("dgram", f"{SOCKET_DIR}/dsd.socket", f"{SOCKET_DIR}/dsd.socket"),
    "APMSocket": ("stream", f"{SOCKET_DIR}/apm.socket", f"{SOCKET_DIR}/apm.socket"),
    "DSDSocketDirectory": ("dgram", SOCKET_DIR, f"{SOCKET_DIR}/dsd.socket"),
    "APMSocketDirectory": ("stream", SOCKET_DIR, f"{SOCKET_DIR}/apm.socket"),
    "DatadogSocketsDirectory": ("dgram", SOCKET_DIR, f"{SOCKET_DIR}/dsd.socket"),
}


def receive(queue: Any, wanted: str, timeout: float = 60.0, prefix: bool = False) -> bytes:
    """Wait until ``wanted`` (or, with ``prefix``, something starting with it)
    arrives on a demo agent's queue; what other pods sent meanwhile is skipped."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            item: bytes = queue.get(timeout=max(0.05, deadline - time.monotonic()))
        except Exception:  # queue.Empty once the time is up
            break
        if item == wanted.encode() or (prefix and item.startswith(wanted.encode())):
            return item
        seen.append(item[:80])
    raise TimeoutError(f"{wanted!r} never reached the agent within {timeout:.0f}s "
                       f"(it received {seen[-10:]})")


@dataclass
class Cluster:
    kubeconfig: str
    node_name: str
    kubelet_root: str
    core: client.CoreV1Api = field(init=False)
    storage: client.StorageV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)

    def __post_init__(self) -> None:
        api = config.new_client_from_config(config_file=self.kubeconfig)
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.apps = client.AppsV1Api(api)

    # ------------------------------------------------------------ namespaces

    def namespace(self, level: str, prefix: str = "e2e") -> str:
        """A new namespace enforcing the Pod Security ``level``, with its default
        ServiceAccount: made here when no controller-manager runs, and by the
        controller-manager (which may get there first) when one does."""
        name = f"{prefix}-{level}-{uuid.uuid4().hex[:6]}"
        labels = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "warn")}
        self.core.create_namespace({"metadata": {"name": name, "labels": labels}})
        try:
            self.core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        except ApiException as err:
            if err.status != 409:
                raise
        return name

    def delete_namespace(self, name: str) -> None:
        for pod in self.core.list_namespaced_pod(name).items:
            self.delete_pod(name, pod.metadata.name, wait=False)
        for pod in self.core.list_namespaced_pod(name).items:
            self.wait_pod_gone(name, pod.metadata.name)
        self.core.delete_namespace(name)

    # ------------------------------------------------------------------ pods

    def app_pod(self, name: str, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]],
                script: str) -> dict[str, Any]:
        """A pod the ``restricted`` level admits: non-root, no capabilities, no
        privilege escalation, RuntimeDefault seccomp; pinned to the node."""
        return {
            "metadata": {"name": name},
            "spec": {
                "nodeName": self.node_name,
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 1,
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "app", "image": APP_IMAGE, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
            },
        }

    def create_pod(self, namespace: str, manifest: dict[str, Any]) -> Any:
        return self.core.create_namespaced_pod(namespace, manifest)

    def pod(self, namespace: str, name: str) -> Any:
        return self.core.read_namespaced_pod(name, namespace)

    def wait_running(self, namespace: str, name: str, timeout: float = 120.0) -> Any:
        def running() -> Any:
            pod = self.pod(namespace, name)
            if pod.status.phase in ("Failed", "Succeeded"):
                raise AssertionError(f"pod {namespace}/{name} ended: {pod.status.phase}; "
                                     f"{self.describe(namespace, name)}")
            return pod if pod.status.phase == "Running" else None

        return wait_for(f"pod {namespace}/{name} to run", running, timeout,
                        describe=lambda: self.describe(namespace, name))

    def delete_pod(self, namespace: str, name: str, wait: bool = True) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as err:
            if err.status != 404:
                raise
        if wait:
            self.wait_pod_gone(namespace, name)

    def wait_pod_gone(self, namespace: str, name: str, timeout: float = 120.0) -> None:
        def gone() -> bool:
            try:
                self.pod(namespace, name)
            except ApiException as err:
                if err.status == 404:
                    return True
                raise
            return False

        wait_for(f"pod {namespace}/{name} to be deleted", gone, timeout,
                 describe=lambda: self.describe(namespace, name))

    # ---------------------------------------------------------------- events

    def events(self, namespace: str, name: str) -> list[Any]:
        found = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}")
        return list(found.items)

    def describe(self, namespace: str, name: str) -> str:
        """The pod's phase, container states and events: what a timeout should show."""
        try:
            pod = self.pod(namespace, name)
        except ApiException as err:
            return f"pod: {err.status} {err.reason}"
        states = [f"{s.name}: {s.state}" for s in (pod.status.container_statuses or [])]
        events = [f"{e.reason}: {e.message}" for e in self.events(namespace, name)]
        return f"phase {pod.status.phase}; containers {states}; events {events}"

    # --------------------------------------------------------------- objects

    def install_csidriver(self) -> None:
        """The CSIDriver object as the chart renders it."""
        body = {
            "metadata": {"name": DRIVER},
            "spec": {"attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "None",
                     "volumeLifecycleModes": ["Ephemeral", "Persistent"]},
        }
        try:
            self.storage.create_csi_driver(body)
        except ApiException as err:
            if err.status != 409:
                raise

    def csinode(self) -> dict[str, Any]:
        """The node's CSINode as JSON: the generated model refuses a CSINode whose
        spec.drivers is still null, which is how the kubelet first creates it."""
        try:
            reply = self.storage.read_csi_node(self.node_name, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return {}
            raise
        node: dict[str, Any] = json.loads(reply.data)
        return node

    def csinode_drivers(self) -> list[str]:
        return [d["name"] for d in (self.csinode().get("spec", {}).get("drivers") or [])]

    def service_account_kubeconfig(self, path: str, server: str, ca_file: str, namespace: str,
                                   name: str, rules: list[dict[str, Any]]) -> str:
        """A kubeconfig at ``path`` for a new ServiceAccount that may do ``rules``
        and nothing else (a ClusterRole and its binding), with a token from the
        TokenRequest API, as a pod of that account gets one."""
        rbac = client.RbacAuthorizationV1Api(self.core.api_client)
        meta = {"metadata": {"name": name}}

        def create(call: Callable[..., Any], *args: Any) -> None:
            try:
                call(*args)
            except ApiException as err:
                if err.status != 409:  # there already: made by an earlier session of this cluster
                    raise

        create(self.core.create_namespace, {"metadata": {"name": namespace}})
        create(self.core.create_namespaced_service_account, namespace, meta)
        create(rbac.create_cluster_role, {**meta, "rules": rules})
        create(rbac.create_cluster_role_binding, {
            **meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
        token = self.core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": 6 * 3600}}).status.token
        with open(path, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "e2e",
                       "clusters": [{"name": "e2e", "cluster": {"server": server,
                                                               "certificate-authority": ca_file}}],
                       "users": [{"name": name, "user": {"token": token}}],
                       "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": name}}]}, f)
        return path


def restart_driver(cluster: Cluster, driver: Any) -> None:
    """Stop ``driver`` (a ``support.driver.DriverProcess``) cleanly, start it
    again and wait for the kubelet to register this new process."""
    registered = driver.logs().count("registered with the kubelet")
    assert driver.terminate() == 0
    driver.start()
    # The kubelet's answer to this process, not its CSINode entry from the last one.
    wait_for("the kubelet to register the driver again",
             lambda: driver.logs().count("registered with the kubelet") > registered, timeout=60)
    assert DRIVER in cluster.csinode_drivers()


def csi_volume(name: str, attributes: dict[str, str], read_only: bool = True) -> dict[str, Any]:
    return {"name": name, "csi": {"driver": DRIVER, "readOnly": read_only,
                                  "volumeAttributes": attributes}}
