"""DatadogLibrary end to end: a real registry on loopback, the real driver, real mounts.

Every test pushes its own images (unique repositories), publishes as the
kubelet does, looks at the volume from a pod's own mount namespace, and reads
the driver's metrics after each scenario.
"""

from __future__ import annotations

import errno
import os
import threading
import uuid

import pytest

from csi_driver.csi.v1 import csi_pb2
from support import kubelet
from support.library_driver import CONTENT, TYPE, LibraryNode, in_pod, library_attributes
from support.oci_registry import HOST_PLATFORM, OTHER_PLATFORM, files_layer, unique_repository
from support.polling import wait_for
from support.snapshot import mounts_under

RESOLUTIONS = "datadog_csi_driver_library_resolutions_total"
DOWNLOADS = "datadog_csi_driver_library_download_duration_seconds_count"
CLEANUPS = "datadog_csi_driver_library_cleanup_total"
CACHED = "datadog_csi_driver_libraries_cached"
CACHED_BYTES = "datadog_csi_driver_libraries_cached_bytes"
LINKS = "datadog_csi_driver_library_volume_links"
LIBRARY_FILES = {
    f"{CONTENT}/version": "1.2.3\n",
    f"{CONTENT}/lib/tracer.so": b"\x7fELF" + bytes(range(256)) * 16,
    "etc/not-mounted": "outside the content directory\n",
}


@pytest.fixture
def make_node(tmp_path, kubelet_root, agent):
    started: list[LibraryNode] = []

    def make(*extra_args: str, env: dict[str, str] | None = None, name: str = "node") -> LibraryNode:
        node = LibraryNode(str(tmp_path / name), kubelet_root, agent.dsd_path, agent.apm_path,
                           extra_args=list(extra_args), env=env or {}).start()
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


def push_library(registry, files=LIBRARY_FILES, *, tag: str = "v1", package: str | None = None,
                 other_platform_too: bool = True):
    """An image index (this platform and another one) of a library, tagged ``tag``."""
    repository = f"datadoghq/{package or unique_repository('dd-lib-test')}"
    images = {HOST_PLATFORM: [files_layer(files)]}
    if other_platform_too:
        images[OTHER_PLATFORM] = [files_layer({f"{CONTENT}/version": "wrong platform\n"})]
    return registry.push_index(repository, images, tag=tag)


def package_of(repository: str) -> str:
    return repository.rpartition("/")[2]


def test_by_tag_by_digest_and_by_tag_at_digest(make_node, oci_registry):
    node = make_node(f"--registry-allow-list={oci_registry.host}")
    index = push_library(oci_registry)
    package = package_of(index.repository)
    host_image = index.manifests[HOST_PLATFORM]

    by_tag = node.publish(library_attributes(oci_registry.host, index.repository, "v1"))
    seen = in_pod(by_tag, "version")
    assert seen["content"] == "1.2.3\n"
    assert seen["listing"] == ["lib", "version"]  # the content directory, nothing else of the image
    assert {"ro", "nosuid", "nodev"} <= set(seen["mount_options"]) and "noexec" not in seen["mount_options"]
    assert seen["write_errno"] == errno.EROFS
    assert node.stored() == [host_image.digest]
    blobs_pulled = oci_registry.count(index.repository, "blobs")

    # The index digest was seen when the tag was resolved: no registry call.
    by_digest = node.publish(library_attributes(oci_registry.host, index.repository, index.digest))
    by_both = node.publish(library_attributes(oci_registry.host, index.repository, f"v1@{index.digest}"))
    by_manifest = node.publish(library_attributes(oci_registry.host, index.repository, host_image.digest))
    assert oci_registry.count(index.repository, "blobs") == blobs_pulled
    for target in (by_digest, by_both, by_manifest):
        assert in_pod(target, "lib/tracer.so")["content"].encode("latin-1") == LIBRARY_FILES[
            f"{CONTENT}/lib/tracer.so"]
    assert node.stored() == [host_image.digest]

    assert node.metric(RESOLUTIONS, library=package, result="downloaded") == 1
    assert node.metric(RESOLUTIONS, library=package, result="cache_hit") == 3
    assert node.metric(DOWNLOADS, library=package, registry=oci_registry.host) == 1
    assert node.metric(CACHED, library=package) == 1
    unpacked = sum(len(v if isinstance(v, bytes) else v.encode()) for v in LIBRARY_FILES.values())
    assert node.metric(CACHED_BYTES, library=package) == unpacked
    assert node.metric(LINKS, library=package) == 4
    assert node.metric("datadog_csi_driver_node_publish_volume_attempts", type=TYPE,
                       path=node.store, status="success") == 4
    stats = node.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=kubelet.volume_id(by_tag.split("/")[-5], "lib"), volume_path=by_tag))
    assert not stats.volume_condition.abnormal
    assert host_image.digest in stats.volume_condition.message

    for target in (by_tag, by_digest, by_both, by_manifest):
        node.unpublish(target)
        assert mounts_under(target) == []
    assert node.metric(LINKS, library=package) == 0
    assert node.stored() == [host_image.digest]  # until the cleanup delay (15 minutes) is over


def test_a_tag_is_resolved_once_per_hour_and_republish_is_idempotent(make_node, oci_registry):
    node = make_node()
    index = push_library(oci_registry)
    attributes = library_attributes(oci_registry.host, index.repository, "v1")
    first = node.publish(attributes)
    oci_registry.reset()
    uid = first.split("/")[-5]
    node.publish(attributes, pod_uid=uid)  # the kubelet's retry of the same volume
    second = node.publish(attributes)
    assert oci_registry.requests(index.repository) == []
    package = package_of(index.repository)
    assert node.metric(RESOLUTIONS, library=package, result="downloaded") == 1
    assert node.metric(RESOLUTIONS, library=package, result="cache_hit") == 1  # the retry resolves nothing
    assert node.metric(LINKS, library=package) == 2
    assert [point for _root, point in mounts_under(first)] == [first]
    assert in_pod(second, "version")["content"] == "1.2.3\n"
    node.unpublish(first)
    node.unpublish(second)


def test_a_single_manifest_by_digest_and_the_injector_package(make_node, oci_registry):
    node = make_node()
    repository = f"{unique_repository('inject')}/apm-inject"
    image = oci_registry.push_image(repository, [files_layer({
        "opt/datadog-packages/datadog-apm-inject/stable/inject/launcher.preload.so": b"\x7fELF-launcher",
        f"{CONTENT}/unrelated": "not the injector's directory\n"})], docker=True)
    target = node.publish(library_attributes(oci_registry.host, repository, image.digest))
    seen = in_pod(target, "stable/inject/launcher.preload.so")
    assert seen["content"] == "\x7fELF-launcher" and seen["listing"] == ["stable"]
    assert node.metric(RESOLUTIONS, library="apm-inject", result="downloaded") == 1
    node.unpublish(target)


def test_twenty_concurrent_publishes_pull_once_and_survive_a_restart(make_node, oci_registry):
    node = make_node("--library-cleanup-delay=1s")
    index = push_library(oci_registry)
    package = package_of(index.repository)
    attributes = library_attributes(oci_registry.host, index.repository, "v1")
    targets: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def publish() -> None:
        try:
            start.wait()
            targets.append(node.publish(attributes))
        except BaseException as err:  # reported below, with the driver's log
            errors.append(err)

    threads = [threading.Thread(target=publish) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, (errors, node.logs()[-3000:])
    # One layer for this platform, fetched once; the other platform's never.
    assert oci_registry.count(index.repository, "blobs") == 1
    assert node.metric(DOWNLOADS, library=package, registry="other") == 1
    # Publishes that asked while it was pulled waited for that pull; the
    # ones served after it found it stored.
    downloaded = node.metric(RESOLUTIONS, library=package, result="downloaded")
    assert downloaded >= 1
    assert downloaded + node.metric(RESOLUTIONS, library=package, result="cache_hit") == 20
    assert node.metric(LINKS, library=package) == 20

    node.restart()
    assert node.metric(LINKS, library=package) == 20  # from the persisted links, before any call
    assert node.metric(CACHED, library=package) == 1
    node.publish(attributes, pod_uid=targets[0].split("/")[-5])  # a republish finds it in place
    assert node.metric(LINKS, library=package) == 20
    for target in targets:
        assert in_pod(target, "version")["content"] == "1.2.3\n"
        node.unpublish(target)
    assert node.metric(LINKS, library=package) == 0
    wait_for("the unused library to be deleted",
             lambda: node.metric(CLEANUPS, library=package, status="success", strategy="delayed") == 1,
             timeout=60, interval=0.05)
    assert node.stored() == [] and os.listdir(os.path.join(node.storage, "tmp")) == []
    assert node.metric(CACHED, library=package) == 0 and node.metric(CACHED_BYTES, library=package) == 0


def test_an_unused_library_stays_for_the_cleanup_delay(make_node, oci_registry):
    node = make_node("--library-cleanup-delay=10m")
    index = push_library(oci_registry)
    package = package_of(index.repository)
    attributes = library_attributes(oci_registry.host, index.repository, index.digest)
    node.unpublish(node.publish(attributes))
    node.restart()  # the delay is persisted: a restart does not delete it either
    oci_registry.reset()
    target = node.publish(attributes)
    assert oci_registry.requests(index.repository) == []
    assert node.metric(RESOLUTIONS, library=package, result="cache_hit") == 1
    assert node.metric(CLEANUPS, library=package, status="success", strategy="delayed") == 0
    node.unpublish(target)


def test_links_lost_with_the_database_are_rebuilt_from_the_mounts(make_node, oci_registry):
    node = make_node("--library-cleanup-delay=0")
    index = push_library(oci_registry)
    package = package_of(index.repository)
    target = node.publish(library_attributes(oci_registry.host, index.repository, "v1"))
    node.driver.terminate()
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(node.storage, "libraries.db" + suffix)
        if os.path.exists(path):
            os.unlink(path)
    node.start()
    # Unrecorded but mounted: kept, and linked again from the mount table.
    assert node.stored() == [index.manifests[HOST_PLATFORM].digest]
    assert node.metric(LINKS, library="other") == 1
    assert in_pod(target, "version")["content"] == "1.2.3\n"
    node.unpublish(target)
    wait_for("the released library to be deleted",
             lambda: node.metric(CLEANUPS, library="other", status="success", strategy="immediate") == 1,
             timeout=60, interval=0.05)
    assert node.stored() == []
    assert node.metric(CACHED, library=package) == 0


def test_a_volume_gone_while_the_driver_was_down_releases_its_library(make_node, oci_registry):
    node = make_node("--library-cleanup-delay=0")
    index = push_library(oci_registry)
    package = package_of(index.repository)
    target = node.publish(library_attributes(oci_registry.host, index.repository, "v1"))
    node.driver.terminate()
    # What a node reboot or a kubelet cleaning up on its own leaves: no mount, no directory.
    os.system(f"umount '{target}'")
    os.rmdir(target)
    node.start()
    assert node.metric(LINKS, library=package) == 0
    wait_for("the library of the vanished volume to be deleted",
             lambda: node.metric(CLEANUPS, library=package, status="success", strategy="immediate") == 1,
             timeout=60, interval=0.05)
    assert node.stored() == []


def test_metrics_labels_stay_closed(make_node, oci_registry):
    node = make_node()
    package = f"never-stored-{uuid.uuid4().hex[:8]}"
    code = None
    try:
        node.publish(library_attributes(oci_registry.host, f"datadoghq/{package}", "v1"))
    except Exception as err:
        code = err.code().name  # type: ignore[attr-defined]
    assert code == "NOT_FOUND"
    names = {labels for name, labels in node.metrics() if name == RESOLUTIONS}
    assert frozenset({("library", "other"), ("result", "failed")}) in names
    assert not any(package in value for labels in names for _key, value in labels)
