"""A "pod": a separate process in its own mount namespace that talks to the
agent only through the published volume.

Like a container runtime, it bind-mounts the published target onto a path of
its own (the container's mount path) inside its private namespace, then
connects there. That also keeps socket paths under the 108-byte AF_UNIX limit
that kubelet target paths can exceed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

_SEND = r"""
import socket, sys
kind, path, payload = sys.argv[1], sys.argv[2], sys.argv[3].encode()
if kind == "dgram":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(payload, path)
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
s.close()
"""

# Where a pod finds the agent's socket in each volume type, and how it talks
# to it: (path inside the volume, "" for the volume itself; transport).
SOCKET_IN_VOLUME = {
    "DSDSocket": ("", "dgram"),
    "DSDSocketDirectory": ("dsd.socket", "dgram"),
    "APMSocket": ("", "stream"),
    "APMSocketDirectory": ("apm.socket", "stream"),
    "DatadogSocketsDirectory": ("dsd.socket", "dgram"),
}

_POD = r"""
set -e
mount --bind "$1" "$2"
shift 2
exec "$@"
"""


def send(kind: str, target: str, payload: str, relative: str = "",
         timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Send ``payload`` from a new mount namespace through the volume at ``target``.

    ``kind`` is "dgram" (DogStatsD) or "stream" (APM); ``relative`` names the
    socket inside a directory volume. A non-zero exit code means the pod could
    not reach the agent.
    """
    container_root = tempfile.mkdtemp(prefix="pod-", dir="/tmp")
    try:
        mount_path = os.path.join(container_root, "dd")
        if os.path.isdir(target):
            os.mkdir(mount_path)
        else:
            open(mount_path, "w").close()
        socket_path = os.path.join(mount_path, relative) if relative else mount_path
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _POD, "pod", target,
             mount_path, sys.executable, "-c", _SEND, kind, socket_path, payload],
            capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(container_root, ignore_errors=True)
