"""The driver set up for library volumes, a "pod" that reads them, and labelled metrics.

``LibraryNode`` is one node: a kubelet root, a storage directory and a driver
process with its metrics port, restartable with the same storage (what a
DaemonSet pod restart looks like). ``in_pod`` looks at a published target
from a new mount namespace, as a container does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from support import kubelet
from support.driver import DriverProcess, free_port

TYPE = "DatadogLibrary"
PRELOAD = "DatadogInjectorPreload"
PACKAGE_KEY = "dd.csi.datadog.com/library.package"
REGISTRY_KEY = "dd.csi.datadog.com/library.registry"
VERSION_KEY = "dd.csi.datadog.com/library.version"
CONTENT = "datadog-init/package"


def library_attributes(registry_host: str, repository: str, version: str) -> dict[str, str]:
    """The pod's ``volumeAttributes`` for ``<registry_host>/<repository>`` at ``version``."""
    path, _, package = repository.rpartition("/")
    registry = f"{registry_host}/{path}" if path else registry_host
    return {"type": TYPE, PACKAGE_KEY: package, REGISTRY_KEY: registry, VERSION_KEY: version}


@dataclass
class LibraryNode:
    workdir: str
    kubelet_root: str
    dsd_path: str
    apm_path: str
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    create_storage: bool = True
    driver: DriverProcess | None = None

    @property
    def storage(self) -> str:
        return os.path.join(self.workdir, "storage")

    @property
    def store(self) -> str:
        return os.path.join(self.storage, "store")

    def start(self) -> LibraryNode:
        os.makedirs(self.workdir, exist_ok=True)
        if self.create_storage:
            os.makedirs(self.storage, exist_ok=True)
        self.driver = DriverProcess(workdir=self.workdir, kubelet_root=self.kubelet_root,
                                    dsd_path=self.dsd_path, apm_path=self.apm_path,
                                    extra_args=list(self.extra_args), env=dict(self.env),
                                    metrics_port=free_port()).start()
        return self

    def restart(self) -> None:
        assert self.driver is not None
        assert self.driver.terminate() == 0, self.driver.logs()
        self.start()

    def stop(self) -> None:
        if self.driver is not None:
            self.driver.stop()

    @property
    def node(self):
        assert self.driver is not None
        return self.driver.node

    def stored(self) -> list[str]:
        return sorted(os.listdir(self.store)) if os.path.isdir(self.store) else []

    def publish(self, attributes: dict[str, str], *, pod_uid: str | None = None,
                readonly: bool = True, volume: str = "lib", timeout: float = 110) -> str:
        """Publish as the kubelet does; return the target path."""
        pod_uid = pod_uid or str(uuid.uuid4())
        target = kubelet.prepare_volume_dir(self.kubelet_root, pod_uid, volume)
        self.node.NodePublishVolume(kubelet.publish_request(
            self.kubelet_root, pod_uid, volume, attributes, readonly=readonly), timeout=timeout)
        return target

    def unpublish(self, target: str) -> None:
        """Unpublish the volume at ``target``, then clean up as the kubelet does."""
        volume_dir = os.path.dirname(target)
        volume = os.path.basename(volume_dir)
        pod_uid = target[len(self.kubelet_root) + len("/pods/"):].split("/")[0]
        self.node.NodeUnpublishVolume(kubelet.unpublish_request(self.kubelet_root, pod_uid, volume))
        kubelet.remove_volume_dir(self.kubelet_root, pod_uid, volume)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        assert self.driver is not None
        url = f"http://127.0.0.1:{self.driver.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value; 0 when the series does not exist (yet)."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def logs(self) -> str:
        return self.driver.logs() if self.driver is not None else ""


_LOOK = r"""
import errno, json, os, sys
root, relative = sys.argv[1], sys.argv[2]
found = {"mount_options": []}
with open("/proc/self/mountinfo") as table:
    for line in table:
        fields = line.split(" ")
        if fields[4] == root:
            found["mount_options"] = fields[5].split(",")
path = os.path.join(root, relative) if relative else root
with open(path, "rb") as f:
    found["content"] = f.read().decode("latin-1")
found["listing"] = sorted(os.listdir(root)) if os.path.isdir(root) else None
probe = os.path.join(root, "written-by-pod") if os.path.isdir(root) else root
try:
    with open(probe, "ab") as f:
        f.write(b"x")
    found["write_errno"] = 0
except OSError as err:
    found["write_errno"] = err.errno
print(json.dumps(found))
"""

_POD = r"""
set -e
mount --bind "$1" "$2"
shift 2
exec "$@"
"""


def in_pod(target: str, relative: str = "") -> dict:
    """From a new mount namespace where ``target`` is bind-mounted at a path of its
    own (a container's mount path): the mount's options there, ``relative``'s
    content, the listing, and the errno of an attempt to write (0: it worked)."""
    container_root = tempfile.mkdtemp(prefix="pod-", dir="/tmp")
    try:
        mount_path = os.path.join(container_root, "lib")
        if os.path.isdir(target):
            os.mkdir(mount_path)
        else:
            open(mount_path, "w").close()
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _POD, "pod", target,
             mount_path, sys.executable, "-c", _LOOK, mount_path, relative],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    finally:
        shutil.rmtree(container_root, ignore_errors=True)


def tree_outside(root: str, inside: str) -> list[str]:
    """Every path under ``root`` that is not under ``inside``: what a hostile
    layer may have written outside the store."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if not (path + "/").startswith(inside.rstrip("/") + "/"):
                found.append(path)
    return sorted(found)


def publish_error(call) -> tuple[str, str]:
    """(status name, message) of a call expected to fail."""
    import grpc

    try:
        call()
    except grpc.RpcError as err:
        return err.code().name, err.details()
    raise AssertionError("the call succeeded")

