"""Which pod each published socket-file volume belongs to, kept across restarts.

An event goes on a pod named by namespace, name and uid. The kubelet passes
those with every publish (``podInfoOnMount: true`` on the CSIDriver object),
and only then: its ``vol_data.json`` beside the target holds the volume's
handle, the driver's and the node's names, but no pod name or namespace, and
the pod's uid alone would take a pod lookup through the API (a permission this
driver does not ask for). So the driver writes what it needs itself: one small
file per volume under ``<storage-path>/pod-refs``, written at publish, removed
at unpublish, read back at start-up for the volumes it adopts. Without a
usable storage path they are kept in memory only, and volumes published before
a restart get no event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)
POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
DIRECTORY = "pod-refs"
MAX_FILE_BYTES = 4096
# What the API server accepts: a pod name is a DNS subdomain, a namespace a DNS label.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_UID = re.compile(r"[0-9A-Za-z-]{1,128}")


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str

    @classmethod
    def parse(cls, namespace: object, name: object, uid: object) -> PodRef | None:
        """A reference from untrusted strings, or None when any is not what the API accepts."""
        checks = ((namespace, _NAMESPACE), (name, _NAME), (uid, _UID))
        if all(isinstance(value, str) and pattern.fullmatch(value) for value, pattern in checks):
            return cls(str(namespace), str(name), str(uid))
        return None


def from_context(context: Mapping[str, str]) -> PodRef | None:
    """The pod the kubelet names in a publish request's ``volume_context``."""
    return PodRef.parse(context.get(POD_NAMESPACE), context.get(POD_NAME), context.get(POD_UID))


def _file_name(target_path: str) -> str:
    return hashlib.sha256(target_path.encode()).hexdigest()[:40] + ".json"


class PodRefs:
    """Target path -> pod, in memory and, when ``directory`` is usable, on disk.

    Publish and unpublish of one target are serialised by their caller, so the
    file of a target is only ever written or removed by one call at a time.
    """

    def __init__(self, directory: str | None) -> None:
        self._directory = directory
        self._refs: dict[str, PodRef] = {}
        self._lock = threading.Lock()
        self._write_failed = False

    def get(self, target_path: str) -> PodRef | None:
        with self._lock:
            return self._refs.get(target_path)

    def remember(self, target_path: str, pod: PodRef) -> None:
        with self._lock:
            if self._refs.get(target_path) == pod:
                return
            self._refs[target_path] = pod
        if self._directory is not None:
            self._write(target_path, pod)

    def forget(self, target_path: str) -> None:
        with self._lock:
            known = self._refs.pop(target_path, None)
        if known is not None and self._directory is not None:
            try:
                os.unlink(os.path.join(self._directory, _file_name(target_path)))
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning(f"cannot remove {_file_name(target_path)} from {self._directory}: "
                            f"{os.strerror(err.errno or 0)}")

    def load(self, published: Collection[str]) -> int:
        """At start-up: take back the pods of the ``published`` targets, delete
        the files of any other (unpublished while no driver ran); return how many."""
        if self._directory is None:
            return 0
        try:
            os.makedirs(self._directory, mode=0o700, exist_ok=True)
            names = os.listdir(self._directory)
        except OSError as err:
            log.warning(f"pod references are kept in memory only: {self._directory} is not usable "
                        f"({os.strerror(err.errno or 0)}); volumes published before a restart get no "
                        "AgentSocketStale event")
            self._directory = None
            return 0
        for name in names:
            found = self._read(name)
            if found is not None and found[0] in published:
                with self._lock:
                    self._refs[found[0]] = found[1]
            else:
                try:
                    os.unlink(os.path.join(self._directory, name))
                except OSError:
                    pass
        return len(self._refs)

    def _write(self, target_path: str, pod: PodRef) -> None:
        assert self._directory is not None
        name = _file_name(target_path)
        staged = os.path.join(self._directory, f".{name}.new")
        content = json.dumps({"target": target_path, "namespace": pod.namespace, "name": pod.name,
                              "uid": pod.uid}).encode()
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            os.replace(staged, os.path.join(self._directory, name))
        except OSError as err:
            if not self._write_failed:  # once: a full or read-only disk would say it per publish
                self._write_failed = True
                log.warning(f"cannot record the pod of a volume in {self._directory} "
                            f"({os.strerror(err.errno or 0)}); after a driver restart it gets no "
                            "AgentSocketStale event", extra={"target": target_path})

    def _read(self, name: str) -> tuple[str, PodRef] | None:
        assert self._directory is not None
        if not name.endswith(".json") or name.startswith("."):
            return None
        try:
            fd = os.open(os.path.join(self._directory, name),
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            raw = os.read(fd, MAX_FILE_BYTES + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            data = json.loads(raw) if len(raw) <= MAX_FILE_BYTES else None
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            return None
        if _file_name(data["target"]) != name:
            return None
        pod = PodRef.parse(data.get("namespace"), data.get("name"), data.get("uid"))
        return (data["target"], pod) if pod is not None else None
