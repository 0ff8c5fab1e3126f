"""HTTP to registries, every wait bounded by the calling pull's deadline.

One ``Connections`` serves one pull (a resolve or a blob download): it keeps a
connection per origin for the few requests the pull makes, and when the
pull's deadline passes a timer shuts every socket it opened, so no step, not
even a server that trickles its headers a byte at a time, outlives the
deadline. Each socket read is also bounded by the client's inactivity timeout.
``abort`` does the same at once, for a driver that is stopping.

HTTPS with the system's certificate authorities and default verification;
plain HTTP only to loopback addresses (test registries, a node-local mirror).
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import grpc

from csi_driver.oci.errors import RegistryError


@functools.cache
def _tls() -> ssl.SSLContext:
    """The system's certificate authorities, loaded on the first HTTPS pull: loading
    them took a third of the driver's start-up when done at import."""
    return ssl.create_default_context()


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (brackets allowed)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Url:
    scheme: str  # "https", or "http" for loopback
    host: str  # without brackets
    port: int
    target: str  # path and query

    @classmethod
    def parse(cls, text: str) -> Url:
        """An absolute http(s) URL; ValueError when it is not one, or is plain HTTP off loopback."""
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{text!r} is not an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(f"{text!r} uses plain HTTP to a host other than this node")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, target)

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    def join(self, location: str) -> Url:
        """A redirect's ``Location``, relative or absolute, against this URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return Url.parse(urljoin(f"{self.scheme}://{host}:{self.port}{self.target}", location))


class Reply:
    """A response whose body is read in bounded steps."""

    def __init__(self, connections: Connections, conn: http.client.HTTPConnection, sock: socket.socket,
                 response: http.client.HTTPResponse, url: Url) -> None:
        self._connections = connections
        self._conn = conn
        # The socket the response arrived on (the connection lets go of it when
        # the server announced it will close after this response).
        self._sock = sock
        self.response = response
        self.url = url

    @property
    def status(self) -> int:
        return self.response.status

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)

    def headers(self, name: str) -> list[str]:
        return self.response.headers.get_all(name) or []

    def read_some(self, size: int) -> bytes:
        """Up to ``size`` bytes from at most one socket read; b"" at the end of the body."""
        self._connections.arm(self._sock)
        try:
            chunk = self.response.read1(size)
        except http.client.IncompleteRead:
            chunk = b""  # the body stopped early; the caller counts what it got
        except (OSError, ValueError, http.client.HTTPException) as err:
            raise self._connections.failure(err, f"reading from {self.url.host}") from err
        if not chunk:
            self._connections.remaining()  # an end caused by the deadline is a timeout, not a short body
        return chunk

    def read_all(self, limit: int) -> bytes | None:
        """The whole body, or None when it is longer than ``limit`` bytes."""
        chunks: list[bytes] = []
        received = 0
        while chunk := self.read_some(min(1 << 16, limit + 1 - received)):
            chunks.append(chunk)
            received += len(chunk)
            if received > limit:
                self.close()
                return None
        return b"".join(chunks)

    def discard(self) -> None:
        """Done with a short body (a 401, a redirect): read to its end so the connection serves the next request."""
        try:
            self.read_all(1 << 16)
        except RegistryError:
            pass  # closed below: the next request opens a fresh connection
        self.close()

    def close(self) -> None:
        """Done with it: a connection left with unread bytes is not reused."""
        if not self.response.isclosed():
            self._conn.close()
        self.response.close()


class Connections:
    """The connections of one pull; usable once, as a context manager."""

    def __init__(self, subject: str, deadline: float, timeout: float) -> None:
        self.subject = subject  # the image reference, for messages
        self._deadline = deadline
        self._timeout = timeout
        self._budget = max(0.0, deadline - time.monotonic())
        self._open: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self._sockets: list[socket.socket] = []  # every socket opened, for the deadline timer
        self._lock = threading.Lock()
        self._expired = False
        self._aborted: str | None = None  # why ``abort`` ended the pull early
        self._timer = threading.Timer(self._budget, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Connections:
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:
            self._expired = True  # nothing opens after this
            for conn in self._open.values():
                conn.close()
            self._open.clear()
            for sock in self._sockets:
                sock.close()  # also those a connection let go of with an unfinished response
            self._sockets.clear()

    def abort(self, reason: str) -> None:
        """End the pull now: every wait fails with UNAVAILABLE ``reason``."""
        with self._lock:
            self._aborted = reason
        self._expire()

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                try:
                    # The plain socket's shutdown, also for TLS: it wakes a
                    # blocked read in another thread without unwrapping TLS there.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0 or self._expired:
            raise self.timed_out()
        return left

    def timed_out(self) -> RegistryError:
        """Why the pull can go no further: its deadline passed, or it was aborted."""
        if self._aborted is not None:
            return RegistryError(grpc.StatusCode.UNAVAILABLE, f"{self.subject}: {self._aborted}")
        if self._budget <= 0:
            return RegistryError(grpc.StatusCode.UNAVAILABLE,
                                 f"{self.subject}: timed out: no time was left for this pull")
        return RegistryError(
            grpc.StatusCode.UNAVAILABLE,
            f"{self.subject}: timed out: the registry did not complete the pull within the "
            f"{self._budget:.3g} s allowed for this call")

    def failure(self, err: BaseException, doing: str) -> RegistryError:
        """What a network error while ``doing`` means for the caller."""
        if self._expired or time.monotonic() >= self._deadline:
            return self.timed_out()
        if isinstance(err, TimeoutError):
            return RegistryError(grpc.StatusCode.UNAVAILABLE,
                                 f"{self.subject}: {doing}: no answer within {self._timeout:.0f} s")
        if isinstance(err, ssl.SSLCertVerificationError):
            return RegistryError(grpc.StatusCode.UNAVAILABLE,
                                 f"{self.subject}: {doing}: TLS certificate not trusted: {err.verify_message}")
        detail = str(err) or type(err).__name__
        return RegistryError(grpc.StatusCode.UNAVAILABLE, f"{self.subject}: {doing}: {detail}")

    def arm(self, sock: socket.socket) -> None:
        """Bound the next wait on ``sock`` by the deadline and the inactivity timeout."""
        sock.settimeout(min(self._timeout, self.remaining()))

    def _connection(self, url: Url) -> tuple[http.client.HTTPConnection, bool]:
        """The origin's open connection (True: reused), or a new, not yet connected one."""
        with self._lock:
            if self._expired:
                raise self.timed_out()
            conn = self._open.get(url.origin)
            if conn is not None and conn.sock is not None:
                return conn, True
            wait = max(0.001, min(self._timeout, self._deadline - time.monotonic()))
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(url.host, url.port, timeout=wait, context=_tls())
            else:
                conn = http.client.HTTPConnection(url.host, url.port, timeout=wait)
            self._open[url.origin] = conn
            return conn, False

    def _forget(self, url: Url) -> None:
        with self._lock:
            conn = self._open.pop(url.origin, None)
        if conn is not None:
            conn.close()

    def request(self, method: str, url: Url, headers: dict[str, str]) -> Reply:
        """Send a request and read the response's status and headers."""
        self.remaining()
        conn, reused = self._connection(url)
        try:
            return self._exchange(conn, method, url, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
            self._forget(url)
            if not reused:
                raise self.failure(err, f"connecting to {url.host}:{url.port}") from err
        # The server closed a kept-alive connection between two requests: once more on a fresh one.
        conn, _ = self._connection(url)
        try:
            return self._exchange(conn, method, url, headers)
        except (OSError, http.client.HTTPException) as err:
            self._forget(url)
            raise self.failure(err, f"connecting to {url.host}:{url.port}") from err

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        conn.connect()
        with self._lock:
            self._sockets.append(conn.sock)
            expired = self._expired
        if expired:  # the timer fired while connecting, before it could see this socket
            conn.close()
            raise self.timed_out()

    def _exchange(self, conn: http.client.HTTPConnection, method: str, url: Url,
                  headers: dict[str, str]) -> Reply:
        try:
            if conn.sock is None:
                self._connect(conn)
            sock: socket.socket = conn.sock
            self.arm(sock)
            conn.request(method, url.target, headers=headers)
            return Reply(self, conn, sock, conn.getresponse(), url)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            raise
        except (OSError, ValueError, http.client.HTTPException) as err:
            self._forget(url)
            raise self.failure(err, f"connecting to {url.host}:{url.port}") from err
