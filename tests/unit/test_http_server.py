"""The metrics and health server: bounded for whatever a client does, and
complete for a client that is merely slow."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from csi_driver.metrics import CachedCheck, HttpServer, Metrics


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return reply.status, reply.read().decode()


def _raw(port: int, payload: bytes) -> bytes:
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        conn.sendall(payload)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except ConnectionResetError:
        return b"".join(chunks)
    finally:
        conn.close()


def test_connections_over_the_cap_are_closed_at_once():
    server = HttpServer(Metrics(), 0, live=lambda: True, ready=lambda: True, host="127.0.0.1")
    server.MAX_CONNECTIONS = 8
    server.start()
    try:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(8)]
        deadline = time.monotonic() + 5
        while server.open_connections < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        extra.settimeout(5)
        try:
            assert extra.recv(1) == b""  # closed without being served
        except ConnectionResetError:
            pass
        extra.close()
        for conn in held:
            conn.close()
        deadline = time.monotonic() + 5
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()


def test_oversized_and_malformed_requests():
    server = HttpServer(Metrics(), 0, live=lambda: True, ready=lambda: True, host="127.0.0.1")
    server.start()
    try:
        # More than a request may be: dropped without an answer.
        assert _raw(server.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n") == b""
        assert _raw(server.port, b"\xff\xfe garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert _raw(server.port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
            b"HTTP/1.1 405 ")
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(server.port, "/nothing")
        assert err.value.code == 404
        head = _raw(server.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    finally:
        server.stop()


def test_a_failing_collector_is_answered_500():
    class Broken:
        def describe(self):  # registering asks this, scraping asks collect
            return []

        def collect(self):
            raise RuntimeError("collector failed")

    metrics = Metrics()
    metrics.registry.register(Broken())
    server = HttpServer(metrics, 0, live=lambda: True, ready=lambda: True, host="127.0.0.1")
    server.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(server.port, "/metrics")
        assert err.value.code == 500
        assert _get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()


def test_a_slow_reader_gets_the_whole_answer(monkeypatch):
    """An answer larger than the socket buffers, read late and slowly, arrives whole."""
    body = bytes(range(256)) * (8 * 4096)  # 8 MiB
    monkeypatch.setattr(HttpServer, "_exposition",
                        lambda self, accept, encoding: (200, ["Content-Type: text/plain"], body))
    server = HttpServer(Metrics(), 0, live=lambda: True, ready=lambda: True, host="127.0.0.1")
    # Small kernel buffers on both sides (accepted sockets inherit the
    # listener's), so most of the answer waits in the server's own buffer.
    server._listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.start()
    try:
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.settimeout(10)
        conn.connect(("127.0.0.1", server.port))
        conn.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        time.sleep(0.5)
        received = bytearray()
        while chunk := conn.recv(8192):
            received += chunk
        conn.close()
        head, _, got = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert len(got) == len(body) and got == body
    finally:
        server.stop()


def test_stopping_with_open_connections_is_quiet(caplog):
    server = HttpServer(Metrics(), 0, live=lambda: True, ready=lambda: True, host="127.0.0.1")
    server.start()
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(5)]
    deadline = time.monotonic() + 5
    while server.open_connections < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    with caplog.at_level("ERROR"):
        server.stop()
    for conn in held:
        conn.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_readiness_is_evaluated_at_most_once_per_interval():
    calls = []
    now = [100.0]
    check = CachedCheck(lambda: calls.append(1) or True, ttl=2.0, clock=lambda: now[0])
    assert all(check() for _ in range(50))
    assert len(calls) == 1
    now[0] += 2.5
    assert check() and len(calls) == 2


def test_readyz_flood_runs_few_probes():
    probes = []

    def ready() -> bool:
        probes.append(1)
        time.sleep(0.05)  # a Probe over the CSI socket takes a while
        return True

    server = HttpServer(Metrics(), 0, live=lambda: True, ready=ready, host="127.0.0.1")
    server.start()
    try:
        results = []
        workers = [threading.Thread(target=lambda: results.append(_get(server.port, "/readyz")[0]))
                   for _ in range(40)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert results == [200] * 40
        assert len(probes) <= 2, f"{len(probes)} probes for 40 requests"
    finally:
        server.stop()
