"""Library volume rows: a cached DatadogLibrary against a socket volume, and a pull's speed.

- Cached publish+unpublish: the library is already stored, so a publish is a
  tag lookup, a few ``openat`` calls down the store, the bind mount and one
  SQLite write for the link; unpublish is the unmount and the unlink. Measured
  on one driver, interleaved with DSDSocketDirectory pairs, one caller on one
  channel.
- Pull: a library of one gzip layer of incompressible bytes (so the layer is as
  big as its content) from the registry on loopback: resolve, fetch into a
  temporary file while hashing it, unpack, rename into the store, mount. The
  reference is ``cat`` of the same blob from a file in the same directory
  tree: what reading those bytes costs on this machine without any of that.

``measure`` needs the ``docker-registry`` binary (scripts/install-registry.sh,
which bench/run.sh runs); ``library_section`` prints the measurements and
``add_targets`` adds the rows of the targets table.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Section, fmt_ratio, fmt_seconds, percentile
from csi_driver.sandbox import kubelet
from support.driver import DriverProcess

_clock = time.perf_counter
CONTENT = "datadog-init/package"
SOCKET_TYPE = "DSDSocketDirectory"
WARMUP = 5  # untimed pairs of each kind before the timed ones
PAIR_P50_OVER_SOCKET_MAX = 2.0  # cached library pair p50 within 2x a socket volume's


@dataclass
class Results:
    library: list[float]  # cached DatadogLibrary publish+unpublish pairs, seconds
    socket: list[float]  # SOCKET_TYPE pairs, interleaved with them
    pull_bytes: int  # the pulled library's layer, as stored in the registry
    pull_seconds: float  # its publish call: resolve, pull, unpack, mount
    cat_seconds: float  # cat of the same bytes from a file

    @property
    def pair_ratio(self) -> float:
        return percentile(self.library, 50) / percentile(self.socket, 50)

    @property
    def pull_mb_per_second(self) -> float:
        return self.pull_bytes / 1e6 / self.pull_seconds

    @property
    def cat_mb_per_second(self) -> float:
        return self.pull_bytes / 1e6 / self.cat_seconds


def measure(work: str, kubelet_root: str, dsd_path: str, apm_path: str, pairs: int,
            download_mb: int) -> Results:
    """Both measurements; ``work`` is an empty directory for the registry's and the
    driver's storage, ``pairs`` the timed pairs of each kind."""
    from support.oci_registry import Auth, OciRegistry, files_layer

    registry = OciRegistry(Path(work) / "registry", Auth.NONE).start()
    driver = None
    try:
        repository = f"datadoghq/dd-lib-bench-{uuid.uuid4().hex[:8]}"
        small = registry.push_image(repository, [files_layer({f"{CONTENT}/version": "1\n"})], tag="v1")
        big_layer = files_layer({f"{CONTENT}/payload.bin": os.urandom(download_mb * 1_000_000)})
        big = registry.push_image(f"{repository}-big", [big_layer], tag="v1")

        os.makedirs(os.path.join(work, "driver", "storage"))
        driver = DriverProcess(workdir=os.path.join(work, "driver"), kubelet_root=kubelet_root,
                               dsd_path=dsd_path, apm_path=apm_path).start()
        cached = _attributes(registry.host, repository, small.digest)
        socket = {"type": SOCKET_TYPE}
        _pair(driver, kubelet_root, cached)  # pulls it: every pair below finds it stored
        for _ in range(WARMUP):
            _pair(driver, kubelet_root, cached)
            _pair(driver, kubelet_root, socket)
        library, sockets = [], []
        for _ in range(pairs):
            library.append(_pair(driver, kubelet_root, cached))
            sockets.append(_pair(driver, kubelet_root, socket))

        # Straight to the registry: the tests' counting proxy would be the bottleneck.
        pulled = _pair(driver, kubelet_root,
                       _attributes(registry.direct_host, f"{repository}-big", big.digest),
                       publish_only=True)
        blob = os.path.join(work, "blob")
        with open(blob, "wb") as f:
            f.write(big_layer.data)
        started = _clock()
        subprocess.run(["cat", blob], stdout=subprocess.DEVNULL, check=True)
        cat_seconds = _clock() - started
        os.unlink(blob)
        return Results(library, sockets, big_layer.size, pulled, cat_seconds)
    finally:
        if driver is not None:
            driver.stop()
        registry.stop()


def library_section(results: Results) -> Section:
    section = Section("[11] Library volumes: a cached DatadogLibrary against a socket volume, one "
                      "caller on one channel; a pull from a registry on loopback",
                      ("measure", "value", "reference", "value vs reference"))
    for label, pct in (("p50", 50), ("p99", 99)):
        lib, sock = percentile(results.library, pct), percentile(results.socket, pct)
        section.add(f"cached DatadogLibrary publish+unpublish {label} ({len(results.library):,} pairs)",
                    fmt_seconds(lib), f"{SOCKET_TYPE} {fmt_seconds(sock)}", fmt_ratio(lib / sock))
    mb = results.pull_bytes / 1e6
    section.add(f"pull of a {mb:.0f} MB library (resolve, fetch, verify, unpack, mount)",
                f"{results.pull_mb_per_second:,.0f} MB/s in {fmt_seconds(results.pull_seconds)}",
                f"cat {results.cat_mb_per_second:,.0f} MB/s", fmt_ratio(
                    results.pull_mb_per_second / results.cat_mb_per_second))
    return section


def add_targets(st: Section, results: Results) -> None:
    """The library rows of the targets table."""
    ratio = results.pair_ratio
    st.add(f"cached DatadogLibrary pair p50 over {SOCKET_TYPE}'s", fmt_ratio(ratio),
           f"<= {PAIR_P50_OVER_SOCKET_MAX:g}x", "PASS" if ratio <= PAIR_P50_OVER_SOCKET_MAX else "MISS")
    st.add(f"library pull MB/s over cat's of the same {results.pull_bytes / 1e6:.0f} MB "
           f"({results.pull_mb_per_second:,.0f} vs {results.cat_mb_per_second:,.0f} MB/s)",
           fmt_ratio(results.pull_mb_per_second / results.cat_mb_per_second), "", "")


def _attributes(host: str, repository: str, version: str) -> dict[str, str]:
    path, _, package = repository.rpartition("/")
    return {"type": "DatadogLibrary", "dd.csi.datadog.com/library.package": package,
            "dd.csi.datadog.com/library.registry": f"{host}/{path}",
            "dd.csi.datadog.com/library.version": version}


def _pair(driver: DriverProcess, kubelet_root: str, attributes: dict[str, str],
          publish_only: bool = False) -> float:
    """Seconds for one publish (+ unpublish) of a fresh pod's volume, read-only as both
    families accept; the kubelet's directory work is outside the timing."""
    uid = str(uuid.uuid4())
    kubelet.prepare_volume_dir(kubelet_root, uid, "v")
    publish = kubelet.publish_request(kubelet_root, uid, "v", attributes, readonly=True)
    unpublish = kubelet.unpublish_request(kubelet_root, uid, "v")
    node = driver.node
    started = _clock()
    node.NodePublishVolume(publish, timeout=110)
    if publish_only:
        seconds = _clock() - started
        node.NodeUnpublishVolume(unpublish, timeout=30)
    else:
        node.NodeUnpublishVolume(unpublish, timeout=30)
        seconds = _clock() - started
    kubelet.remove_volume_dir(kubelet_root, uid, "v")
    os.rmdir(os.path.join(kubelet_root, "pods", uid, "volumes", "kubernetes.io~csi"))
    os.rmdir(os.path.join(kubelet_root, "pods", uid, "volumes"))
    os.rmdir(os.path.join(kubelet_root, "pods", uid))
    return seconds
