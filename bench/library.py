"""Library volume rows: a cached DatadogLibrary against a socket volume, and a pull's speed.

- Cached publish+unpublish: the library is already stored, so a publish is a
  tag lookup, a few ``openat`` calls down the store, the bind mount and one
  SQLite write for the link; unpublish is the unmount and the unlink. Measured
  on the same driver, interleaved with DSDSocketDirectory pairs, one caller.
- Pull: a 50 MB library (one gzip layer of incompressible bytes, so the layer is
  as big as its content) from the registry on loopback: resolve, fetch into a
  temporary file while hashing it, unpack, rename into the store, mount. The
  reference is ``cat`` of the same blob from a file in the same directory tree,
  i.e. what reading those bytes costs on this machine without any of the above.

``library_section(...)`` returns a ``bench.stats.Section``; it needs the
``docker-registry`` binary (scripts/install-registry.sh), without which the
section holds one row saying so.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from bench.stats import Section, fmt_ratio, fmt_seconds, percentile
from csi_driver.sandbox import kubelet
from support.driver import DriverProcess

_clock = time.perf_counter
CONTENT = "datadog-init/package"
TARGET_RATIO = 2.0  # cached library pair p50 within 2x a socket volume's


def library_section(work: str, kubelet_root: str, dsd_path: str, apm_path: str, pairs: int,
                    download_mb: int = 50) -> Section:
    """Measure both library rows; ``work`` is an empty directory this function may
    fill (the registry's storage, the driver's storage), ``pairs`` the number of
    publish+unpublish pairs of each kind."""
    section = Section("[L] Library volumes: cached DatadogLibrary vs a socket volume; a pull from "
                      "a loopback registry", ("measure", "p50 / rate", "reference", "ratio", "target"))
    try:
        from support.oci_registry import Auth, OciRegistry, files_layer, registry_binary

        registry_binary()
    except (ImportError, RuntimeError) as err:
        section.add(f"skipped: {err}", "", "", "", "")
        return section
    registry = OciRegistry(Path(work) / "registry", Auth.NONE).start()
    driver = None
    try:
        repository = f"datadoghq/dd-lib-bench-{uuid.uuid4().hex[:8]}"
        small = registry.push_image(repository, [files_layer({f"{CONTENT}/version": "1\n"})], tag="v1")
        big_payload = os.urandom(download_mb << 20)
        big_layer = files_layer({f"{CONTENT}/payload.bin": big_payload})
        big = registry.push_image(f"{repository}-big", [big_layer], tag="v1")
        del big_payload

        storage = os.path.join(work, "driver", "storage")
        os.makedirs(storage)
        driver = DriverProcess(workdir=os.path.join(work, "driver"), kubelet_root=kubelet_root,
                               dsd_path=dsd_path, apm_path=apm_path).start()
        attributes = _attributes(registry.host, repository, small.digest)
        _pair(driver, kubelet_root, attributes)  # pulls it: every pair below finds it stored
        library, socket = [], []
        for _ in range(pairs):
            library.append(_pair(driver, kubelet_root, attributes))
            socket.append(_pair(driver, kubelet_root, {"type": "DSDSocketDirectory"}))
        lib_p50, sock_p50 = percentile(library, 50), percentile(socket, 50)
        ratio = lib_p50 / sock_p50
        section.add("cached DatadogLibrary publish+unpublish", fmt_seconds(lib_p50),
                    f"DSDSocketDirectory {fmt_seconds(sock_p50)}", fmt_ratio(ratio),
                    f"<= {TARGET_RATIO:g}x {'PASS' if ratio <= TARGET_RATIO else 'MISS'}")

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
        mb = big_layer.size / 1e6
        section.add(f"pull {mb:.0f} MB library (resolve, fetch, verify, unpack, mount)",
                    f"{mb / pulled:.0f} MB/s", f"cat {mb / cat_seconds:.0f} MB/s",
                    fmt_ratio(pulled / cat_seconds), "")
    finally:
        if driver is not None:
            driver.stop()
        registry.stop()
    return section


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
