"""The library cache's metrics, with the reference driver's names and labels.

Every label value comes from a set bounded by the node's own state, never from
free text in a pod spec: ``library`` is the package name only for Datadog's own
packages or a package the store holds (the store only holds what was pulled
from an allowed registry), else ``other``; ``registry`` is an allow-list entry
or one of Datadog's registries, else ``other``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from csi_driver.volumes.library import allow_list_entry, normalise_registry

OTHER = "other"
CACHE_HIT, DOWNLOADED, FAILED = "cache_hit", "downloaded", "failed"
SUCCESS, SKIPPED_IN_USE = "success", "skipped_in_use"  # cleanup statuses, with FAILED
KNOWN_PACKAGES = frozenset({
    "apm-inject", "dd-lib-java-init", "dd-lib-python-init", "dd-lib-js-init",
    "dd-lib-dotnet-init", "dd-lib-ruby-init", "dd-lib-php-init",
})
KNOWN_REGISTRIES = ("gcr.io/datadoghq", "public.ecr.aws/datadog", "docker.io/datadog",
                    "registry.datadoghq.com")
# From a cached pull (tenths of a second) to one near the download timeout.
DOWNLOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class PackageState:
    cached: int = 0  # libraries in the store
    cached_bytes: int = 0
    links: int = 0  # volumes mounting one of them


class LibraryMetrics:
    def __init__(self, registry: CollectorRegistry, allow_list: tuple[str, ...],
                 state: Callable[[], dict[str, PackageState]] = dict) -> None:
        self._allow_list = allow_list
        self._state = state
        self.resolutions = Counter(
            "datadog_csi_driver_library_resolutions_total",
            "Outcomes of resolving a library for a volume (cache_hit: already stored; "
            "downloaded: pulled for it; failed)", ["library", "result"], registry=registry)
        self.download_seconds = Histogram(
            "datadog_csi_driver_library_download_duration_seconds",
            "Time spent pulling a library from its registry", ["library", "registry"],
            buckets=DOWNLOAD_BUCKETS, registry=registry)
        self.cleanups = Counter(
            "datadog_csi_driver_library_cleanup_total",
            "Attempts to delete a library no volume uses", ["library", "status", "strategy"],
            registry=registry)
        registry.register(_CacheGauges(self._gauge_state))

    def set_state(self, state: Callable[[], dict[str, PackageState]]) -> None:
        self._state = state

    def _gauge_state(self) -> dict[str, PackageState]:
        return self._state()

    def library_label(self, package: str, stored: Iterable[str] = ()) -> str:
        return package if package in KNOWN_PACKAGES or package in stored else OTHER

    def registry_label(self, registry: str) -> str:
        written = normalise_registry(registry)
        entry = allow_list_entry(written, self._allow_list)
        if entry is not None:
            return entry
        return written if written in KNOWN_REGISTRIES else OTHER

    def resolution(self, library: str, result: str) -> None:
        self.resolutions.labels(library=library, result=result).inc()

    def download(self, library: str, registry: str, seconds: float) -> None:
        self.download_seconds.labels(library=library, registry=registry).observe(seconds)

    def cleanup(self, library: str, status: str, strategy: str) -> None:
        self.cleanups.labels(library=library, status=status, strategy=strategy).inc()


class _CacheGauges(Collector):
    """The three per-package gauges, read from the cache's state when scraped
    (so they hold the persisted state from the first scrape on). A package keeps
    its series at 0 once its last library is gone, rather than a gap."""

    def __init__(self, state: Callable[[], dict[str, PackageState]]) -> None:
        self._state = state
        self._seen: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        state = self._state()
        self._seen.update(state)
        cached = GaugeMetricFamily("datadog_csi_driver_libraries_cached",
                                   "Library versions stored on this node, per package",
                                   labels=["library"])
        cached_bytes = GaugeMetricFamily("datadog_csi_driver_libraries_cached_bytes",
                                         "Bytes of the libraries stored on this node, per package",
                                         labels=["library"])
        links = GaugeMetricFamily("datadog_csi_driver_library_volume_links",
                                  "Volumes currently mounting a library, per package",
                                  labels=["library"])
        for package in sorted(self._seen):
            now = state.get(package, PackageState())
            cached.add_metric([package], now.cached)
            cached_bytes.add_metric([package], now.cached_bytes)
            links.add_metric([package], now.links)
        yield from (cached, cached_bytes, links)
