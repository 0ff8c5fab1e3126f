"""Prometheus metrics and the HTTP endpoint serving them with health checks.

The two attempt counters keep the reference driver's exact series names
(``datadog_csi_driver_node_publish_volume_attempts``, no ``_total`` suffix) so
existing dashboards and monitors keep working; prometheus_client's Counter
would append ``_total``, so they are exposed by a small collector instead.
Everything new uses the library's own types and naming conventions.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.exposition import MetricsHandler
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

PUBLISH_ATTEMPTS = "datadog_csi_driver_node_publish_volume_attempts"
UNPUBLISH_ATTEMPTS = "datadog_csi_driver_node_unpublish_volume_attempts"
SUCCESS, FAILED, UNSUPPORTED = "success", "failed", "unsupported"
# Publishing is a few syscalls: resolution down to 100 µs matters.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 10.0)


class _AttemptCounters:
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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = _AttemptCounters()
        self.registry.register(self.attempts)
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
        self.published_volumes = Gauge(
            "datadog_csi_driver_published_volumes",
            "Volumes this driver process currently has published, by type",
            ["type"], registry=self.registry)
        self.stale_socket_mounts = Gauge(
            "datadog_csi_driver_stale_socket_mounts",
            "Published socket-file volumes whose inode no longer matches the live agent socket "
            "(the agent re-created its socket; the directory volume types avoid this)",
            registry=self.registry)

    def publish(self, volume_type: str, path: str, status: str, seconds: float) -> None:
        self.attempts.inc(PUBLISH_ATTEMPTS, type=volume_type, path=path, status=status)
        self.publish_seconds.labels(type=volume_type, status=status).observe(seconds)

    def unpublish(self, status: str, seconds: float) -> None:
        self.attempts.inc(UNPUBLISH_ATTEMPTS, status=status)
        self.unpublish_seconds.labels(status=status).observe(seconds)


class HttpServer:
    """``/metrics`` plus ``/healthz`` (liveness) and ``/readyz`` (readiness).

    Both health checks take callables so they report the driver's real state:
    liveness is "the gRPC server is serving", readiness is "a Probe over the
    CSI socket succeeds".
    """

    def __init__(self, metrics: Metrics, port: int, live: Callable[[], bool],
                 ready: Callable[[], bool], host: str = "") -> None:
        registry = metrics.registry

        class Handler(MetricsHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                path = self.path.split("?", 1)[0]
                if path in ("/healthz", "/livez"):
                    self._health(live)
                elif path == "/readyz":
                    self._health(ready)
                elif path == "/metrics":
                    super().do_GET()
                else:
                    self.send_error(404, "try /metrics, /healthz or /readyz")

            def _health(self, check: Callable[[], bool]) -> None:
                try:
                    ok = check()
                except Exception:  # a failing check is an unhealthy answer, not a crash
                    ok = False
                body = b"ok\n" if ok else b"unhealthy\n"
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # scrapes every few seconds would drown the call logs

        Handler.registry = registry
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
