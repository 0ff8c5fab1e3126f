"""Prometheus metrics and the HTTP endpoint serving them with health checks.

The two attempt counters keep the reference driver's exact series names
(``datadog_csi_driver_node_publish_volume_attempts``, no ``_total`` suffix) so
existing dashboards and monitors keep working; prometheus_client's Counter
would append ``_total``, so they are exposed by a small collector instead.
Everything new uses the library's own types and naming conventions.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
PUBLISH_ATTEMPTS = "datadog_csi_driver_node_publish_volume_attempts"
UNPUBLISH_ATTEMPTS = "datadog_csi_driver_node_unpublish_volume_attempts"
SUCCESS, FAILED, UNSUPPORTED = "success", "failed", "unsupported"
# Publishing is a few syscalls: resolution down to 100 µs matters.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 10.0)


class _AttemptCounters(Collector):
    """Counters exposed under exact, suffix-free names."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + 1

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            values = dict(self._values)
        docs = {
            PUBLISH_ATTEMPTS: "NodePublishVolume attempts by volume type, host path and status",
            UNPUBLISH_ATTEMPTS: "NodeUnpublishVolume attempts by status",
        }
        for name, doc in docs.items():
            family = Metric(name, doc, "counter")
            for (sample_name, labels), value in sorted(values.items()):
                if sample_name == name:
                    family.add_sample(name, dict(labels), value)
            yield family


class _PublishedVolumes(Collector):
    """``datadog_csi_driver_published_volumes{type}``, counted when scraped.

    A type keeps its series (at 0) once it has been seen, as a pushed gauge
    would, so a dashboard sees the drop to zero rather than a gap.
    """

    NAME = "datadog_csi_driver_published_volumes"

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts
        self._seen: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        counts = self._counts()
        self._seen.update(counts)
        family = GaugeMetricFamily(self.NAME, "Volumes this driver process currently has "
                                   "published, by type", labels=["type"])
        for volume_type in sorted(self._seen):
            family.add_metric([volume_type], counts.get(volume_type, 0))
        yield family


class Metrics:
    def __init__(self, published_by_type: Callable[[], dict[str, int]] = dict,
                 stale_volumes: Callable[[], float] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = _AttemptCounters()
        self.registry.register(self.attempts)
        self.registry.register(_PublishedVolumes(published_by_type))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.publish_seconds = Histogram(
            "datadog_csi_driver_node_publish_volume_duration_seconds",
            "NodePublishVolume latency by volume type and status",
            ["type", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.unpublish_seconds = Histogram(
            "datadog_csi_driver_node_unpublish_volume_duration_seconds",
            "NodeUnpublishVolume latency by status",
            ["status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stale_socket_mounts = Gauge(
            "datadog_csi_driver_stale_socket_mounts",
            "Published volumes whose mount no longer holds the live agent socket or socket "
            "directory (the agent re-created it since; pods need a restart)",
            registry=self.registry)
        self.stale_socket_mounts.set_function(stale_volumes)

    def publish(self, volume_type: str, path: str, status: str, seconds: float) -> None:
        self.attempts.inc(PUBLISH_ATTEMPTS, type=volume_type, path=path, status=status)
        self.publish_seconds.labels(type=volume_type, status=status).observe(seconds)

    def unpublish(self, status: str, seconds: float) -> None:
        self.attempts.inc(UNPUBLISH_ATTEMPTS, status=status)
        self.unpublish_seconds.labels(status=status).observe(seconds)


class CachedCheck:
    """A health check whose answer is reused for ``ttl`` seconds.

    Readiness is a CSI Probe over the real socket: a gRPC channel per HTTP
    request let a flood of ``/readyz`` requests slow down the kubelet's
    publishes. Concurrent callers wait for one evaluation instead of each
    running their own.
    """

    def __init__(self, check: Callable[[], bool], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check, self._ttl, self._clock = check, ttl, clock
        self._lock = threading.Lock()
        self._answer: tuple[float, bool] | None = None

    def __call__(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._answer is not None and now - self._answer[0] < self._ttl:
                return self._answer[1]
            try:
                ok = bool(self._check())
            except Exception:  # a failing check is an unhealthy answer, not a crash
                ok = False
            self._answer = (self._clock(), ok)
            return ok


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


class HttpServer:
    """``/metrics`` plus ``/healthz`` (liveness) and ``/readyz`` (readiness).

    Both health checks take callables so they report the driver's real state:
    liveness is "the gRPC server is serving", readiness is "a Probe over the
    CSI socket succeeds" (cached for ``READY_TTL`` seconds).

    The port is reachable from the pod network, so what a client can make it
    hold is bounded: one event-loop thread serves every connection (an idle
    connection costs a few KB, not a thread), at most ``MAX_CONNECTIONS`` are
    open at once (more are closed on accept), a request must arrive whole
    within ``REQUEST_TIMEOUT`` seconds and within ``MAX_REQUEST_BYTES``, and
    the answer must be taken within ``RESPONSE_TIMEOUT``. Building the
    exposition and evaluating readiness run on two worker threads, so neither
    stalls the loop. One request per connection (HTTP/1.0 semantics), as
    Prometheus and the kubelet's probes use it.

    The listening socket is bound in the constructor, so a port already taken
    fails there, before anything else has started.
    """

    MAX_CONNECTIONS = 256
    MAX_REQUEST_BYTES = 8192
    REQUEST_TIMEOUT = 5.0
    RESPONSE_TIMEOUT = 10.0
    READY_TTL = 2.0

    def __init__(self, metrics: Metrics, port: int, live: Callable[[], bool],
                 ready: Callable[[], bool], host: str = "") -> None:
        self._registry = metrics.registry
        self._live = live
        self._ready = CachedCheck(ready, self.READY_TTL)
        self._listener = _listen(host, port)
        self._loop = asyncio.new_event_loop()
        self._work = ThreadPoolExecutor(max_workers=2, thread_name_prefix="metrics-work")
        self._connections = 0
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)
        self._started = threading.Event()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        return self._connections

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        else:
            self._loop.close()
        self._listener.close()
        self._work.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(
            self._serve, sock=self._listener, limit=self.MAX_REQUEST_BYTES))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= self.MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._connections += 1
        done = False
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                              self.REQUEST_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                return  # closed early, or more than a request may be: nothing to answer
            try:
                status, headers, body = await self._answer(head)
            except Exception:
                log.exception("answering an HTTP request failed")
                status, headers, body = 500, [_TEXT], b"internal error\n"
            lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
                     f"Content-Length: {len(body)}", "Connection: close", *headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if not head.startswith(b"HEAD "):
                writer.write(body)
            # Closing flushes what is still buffered; wait_closed returns once
            # it is all handed to the kernel (or the client is too slow).
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), self.RESPONSE_TIMEOUT)
            done = True
        except (TimeoutError, ConnectionError):
            pass  # a client that is too slow or gone gets nothing more
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            self._connections -= 1
            if not done:
                writer.transport.abort()

    async def _answer(self, head: bytes) -> tuple[int, list[str], bytes]:
        request_line, _, header_block = head.decode("latin-1").partition("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, [_TEXT], b"malformed request line\n"
        if parts[0] not in ("GET", "HEAD"):
            return 405, ["Allow: GET, HEAD", _TEXT], b"only GET and HEAD are served\n"
        path = parts[1].split("?", 1)[0]
        loop = asyncio.get_running_loop()
        if path in ("/healthz", "/livez"):
            return _health(self._live())
        if path == "/readyz":
            return _health(await loop.run_in_executor(self._work, self._ready))
        if path == "/metrics":
            fields = _header_fields(header_block)
            return await loop.run_in_executor(self._work, self._exposition,
                                              fields.get("accept", ""),
                                              fields.get("accept-encoding", ""))
        return 404, [_TEXT], b"try /metrics, /healthz or /readyz\n"

    def _exposition(self, accept: str, accept_encoding: str) -> tuple[int, list[str], bytes]:
        encoder, content_type = choose_encoder(accept)
        body = encoder(self._registry)
        headers = [f"Content-Type: {content_type}"]
        if "gzip" in accept_encoding:
            body = gzip.compress(body)
            headers.append("Content-Encoding: gzip")
        return 200, headers, body


_TEXT = "Content-Type: text/plain; charset=utf-8"


def _health(ok: bool) -> tuple[int, list[str], bytes]:
    return (200, [_TEXT], b"ok\n") if ok else (503, [_TEXT], b"unhealthy\n")


def _header_fields(block: str) -> dict[str, str]:
    fields = {}
    for line in block.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket: on every address (IPv6 and IPv4 where the node
    has both) when ``host`` is empty, else on that address."""
    if host:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=128)
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                        backlog=128)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise
    return socket.create_server(("", port), backlog=128)
