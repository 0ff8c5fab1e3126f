"""Claiming a Unix socket path to serve on, and listening there.

A socket file left by a crashed driver is removed, but if another process
still answers on it, start-up is refused instead of stealing the endpoint from
under the kubelet (two drivers on one endpoint would race for its calls).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat

import grpc

log = logging.getLogger("csi_driver.server")


class EndpointInUse(RuntimeError):
    pass


def claim_endpoint(path: str) -> None:
    """Make ``path`` free for a new listener, or raise if it must not be taken."""
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EndpointInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise EndpointInUse(f"cannot check endpoint {path}: {err.strerror}") from None
        log.info("removing stale endpoint socket left by a previous run", extra={"endpoint": path})
        os.unlink(path)
        return
    finally:
        probe.close()
    raise EndpointInUse(
        f"another process is serving on {path}; stop it first (two drivers on one endpoint "
        "would race for the kubelet's calls)"
    )


def listen_unix(server: grpc.Server, path: str) -> None:
    """Have ``server`` listen on the Unix socket ``path``, readable and writable
    by its owner and group only (the umask applies when the socket is bound)."""
    old_umask = os.umask(0o117)
    try:
        server.add_insecure_port(f"unix://{path}")
    finally:
        os.umask(old_umask)
