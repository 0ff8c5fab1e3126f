#!/usr/bin/env python3
"""Check that a cluster started by `scripts/e2e-cluster.sh up DIR` runs pods.

    python smoke.py DIR        (needs the `kubernetes` client package)

1. a namespace enforcing the `restricted` Pod Security level runs a pod of the
   app image as uid 65532, all capabilities dropped; its log and exec work;
2. the same pod with a hostPath volume is refused by the API server (403);
3. in a `privileged` namespace, a pod mounting a host directory by hostPath
   sends with `dd-send dgram` and `dd-send stream` to Unix sockets that this
   process listens on, and the payloads arrive;
4. deleted pods are cleaned up by the kubelet: gone from the API, no task
   left in containerd, no pod directory left under the kubelet root.

Each step prints its duration. Exits non-zero at the first failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

RESTRICTED_NS = "smoke-restricted"
PRIVILEGED_NS = "smoke-privileged"


def read_env(cluster_dir: str) -> dict[str, str]:
    env = {}
    with open(os.path.join(cluster_dir, "env")) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            if key:
                env[key] = value
    return env


def timed(what: str):
    """`with timed("x"):` prints x, its duration and whether it raised."""
    class Timer:
        def __enter__(self):
            self.start = time.monotonic()

        def __exit__(self, exc_type, exc, tb):
            status = "ok" if exc_type is None else f"FAILED: {exc}"
            print(f"smoke: {what:<58} {time.monotonic() - self.start:6.1f} s  {status}", flush=True)
    return Timer()


def ensure_namespace(core: client.CoreV1Api, name: str, level: str) -> None:
    labels = {"pod-security.kubernetes.io/enforce": level}
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    except ApiException as err:
        if err.status != 409:
            raise
    # No controller-manager: the ServiceAccount admission needs `default` to exist.
    try:
        core.create_namespaced_service_account(name, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="default")))
    except ApiException as err:
        if err.status != 409:
            raise


def restricted_container(name: str, image: str, command: list[str], mounts=None) -> client.V1Container:
    return client.V1Container(
        name=name, image=image, image_pull_policy="Never", command=command,
        volume_mounts=mounts,
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            run_as_non_root=True, run_as_user=65532, run_as_group=65532,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault")))


def pod(name: str, node: str, container: client.V1Container, volumes=None,
        restart: str = "Always") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            node_name=node, automount_service_account_token=False, restart_policy=restart,
            termination_grace_period_seconds=2, containers=[container], volumes=volumes,
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True, run_as_user=65532,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))))


def wait_phase(core: client.CoreV1Api, ns: str, name: str, phases: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        p = core.read_namespaced_pod(name, ns)
        if p.status.phase in phases:
            return p.status.phase
        if time.monotonic() > deadline:
            raise TimeoutError(f"pod {ns}/{name} is {p.status.phase}: {p.status}")
        time.sleep(0.2)


def listen_dgram(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o777)  # the pod's process is uid 65532
    s.settimeout(60)
    return s


def serve_stream_once(path: str, received: list[bytes]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(1)
    srv.settimeout(60)

    def run():
        conn, _ = srv.accept()
        with conn:
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            received.append(data)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        srv.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main(cluster_dir: str) -> int:
    env = read_env(cluster_dir)
    config.load_kube_config(env["KUBECONFIG"])
    core = client.CoreV1Api()
    node, app = env["NODE_NAME"], env["APP_IMAGE"]

    with timed("namespaces (restricted, privileged) and default ServiceAccounts"):
        ensure_namespace(core, RESTRICTED_NS, "restricted")
        ensure_namespace(core, PRIVILEGED_NS, "privileged")

    with timed("restricted pod created and Running"):
        core.create_namespaced_pod(RESTRICTED_NS, pod("app", node, restricted_container(
            "app", app, ["sh", "-c", "id; sleep 3600"])))
        wait_phase(core, RESTRICTED_NS, "app", {"Running"})

    with timed("its log shows uid 65532, exec works"):
        deadline = time.monotonic() + 10
        while "uid=65532" not in (logs := core.read_namespaced_pod_log("app", RESTRICTED_NS)):
            if time.monotonic() > deadline:
                raise AssertionError(f"log: {logs!r}")
            time.sleep(0.2)
        out = stream(core.connect_get_namespaced_pod_exec, "app", RESTRICTED_NS,
                     command=["cat", "/proc/self/status"], stderr=True, stdout=True)
        cap_eff = next(line for line in out.splitlines() if line.startswith("CapEff"))
        assert cap_eff.split()[1] == "0000000000000000", cap_eff
        print(f"smoke:   log: {logs.strip()}   exec: {cap_eff}")

    with timed("the same pod with a hostPath volume is refused (403)"):
        refused = pod("app-hostpath", node, restricted_container(
            "app", app, ["sleep", "3600"], [client.V1VolumeMount(name="h", mount_path="/h")]),
            volumes=[client.V1Volume(name="h", host_path=client.V1HostPathVolumeSource(path="/tmp"))])
        try:
            core.create_namespaced_pod(RESTRICTED_NS, refused)
            raise AssertionError("a hostPath pod was admitted in a restricted namespace")
        except ApiException as err:
            assert err.status == 403 and "PodSecurity" in err.body, (err.status, err.body)
            print(f"smoke:   {err.status}: {err.body[err.body.find('violates'):][:110]}...")

    agent_dir = tempfile.mkdtemp(prefix="smoke-agent-")
    os.chmod(agent_dir, 0o755)
    dgram = listen_dgram(os.path.join(agent_dir, "dsd.socket"))
    received: list[bytes] = []
    server = serve_stream_once(os.path.join(agent_dir, "apm.socket"), received)
    mount = [client.V1VolumeMount(name="agent", mount_path="/var/run/datadog")]
    volumes = [client.V1Volume(name="agent", host_path=client.V1HostPathVolumeSource(path=agent_dir))]
    payload = "smoke.metric:1|c|#pod:sender"
    with timed("dd-send dgram from a pod reaches a host datagram socket"):
        core.create_namespaced_pod(PRIVILEGED_NS, pod("dgram", node, restricted_container(
            "send", app, ["dd-send", "dgram", "/var/run/datadog/dsd.socket", payload], mount),
            volumes=volumes, restart="Never"))
        data = dgram.recv(65536).decode()
        assert data == payload, data
        assert wait_phase(core, PRIVILEGED_NS, "dgram", {"Succeeded", "Failed"}) == "Succeeded"
        print(f"smoke:   host received {data!r}")

    with timed("dd-send stream from a pod reaches a host stream socket"):
        core.create_namespaced_pod(PRIVILEGED_NS, pod("stream", node, restricted_container(
            "send", app, ["dd-send", "stream", "/var/run/datadog/apm.socket", "PUT /v0.4/traces"], mount),
            volumes=volumes, restart="Never"))
        server.join(60)
        assert received == [b"PUT /v0.4/traces"], received
        assert wait_phase(core, PRIVILEGED_NS, "stream", {"Succeeded", "Failed"}) == "Succeeded"
        answer = core.read_namespaced_pod_log("stream", PRIVILEGED_NS)
        assert answer.startswith("HTTP/1.0 200"), answer
        print(f"smoke:   host received {received[0]!r}, pod printed {answer.strip()!r}")

    with timed("pods deleted and cleaned up by the kubelet"):
        uids = []
        for ns, name in ((RESTRICTED_NS, "app"), (PRIVILEGED_NS, "dgram"), (PRIVILEGED_NS, "stream")):
            uids.append(core.read_namespaced_pod(name, ns).metadata.uid)
            core.delete_namespaced_pod(name, ns)
        deadline = time.monotonic() + 60
        while True:
            left = [p.metadata.name for ns in (RESTRICTED_NS, PRIVILEGED_NS)
                    for p in core.list_namespaced_pod(ns).items]
            tasks = subprocess.run(["ctr", "--address", env["CONTAINERD_ADDRESS"], "-n", "k8s.io",
                                    "tasks", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split()
            dirs = [u for u in uids if os.path.exists(os.path.join(env["KUBELET_ROOT"], "pods", u))]
            if not left and not tasks and not dirs:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"pods {left}, tasks {tasks}, pod dirs {dirs} still there")
            time.sleep(0.5)
    dgram.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
