"""Slow library downloads hold up nobody: not other volumes' calls, not shutdown.

The registry's proxy stalls the layer downloads of several libraries, so their
publishes sit in the driver mid-download. Meanwhile socket volumes and an
already cached library are published and unpublished; each is checked to have
finished while every stalled download was still unanswered by the registry,
an order of events rather than a timing. Then the stall is lifted and the
stuck publishes finish, or the driver is stopped and they fail with
UNAVAILABLE (the kubelet retries) without the driver waiting for the registry.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest

from csi_driver.oci.reference import ImageReference
from csi_driver.oci.registry import Credentials, RegistryClient, RegistryError
from csi_driver.server import GRACE_SECONDS
from support.library_driver import CONTENT, LibraryNode, in_pod, library_attributes
from support.oci_registry import HOST_PLATFORM, Fault, OciRegistry, PushedImage, files_layer, unique_repository
from support.polling import wait_for
from support.snapshot import mounts_under

SLOW_LIBRARIES = 4  # more than the calls the driver runs at once (server.RUNNING)
FOLLOWERS = 2  # publishes that join a stuck download of a library already being pulled
RESOLUTIONS = "datadog_csi_driver_library_resolutions_total"
DOWNLOADS = "datadog_csi_driver_library_download_duration_seconds_count"
CACHED = "datadog_csi_driver_libraries_cached"
LINKS = "datadog_csi_driver_library_volume_links"
PUBLISHES = "datadog_csi_driver_node_publish_volume_attempts"
# Longer than anything these tests do while a download is held back, shorter
# than the driver's inactivity timeout for one read (oci.registry, 30 s).
HOLD_SECONDS = 25.0


@pytest.fixture
def node(tmp_path, kubelet_root, agent, oci_registry):
    started = LibraryNode(str(tmp_path / "node"), kubelet_root, agent.dsd_path, agent.apm_path,
                          extra_args=[f"--registry-allow-list={oci_registry.host}"]).start()
    yield started
    started.stop()


def push_library(registry: OciRegistry, name: str) -> PushedImage:
    """A library of its own (its own content, so its own digest), tagged v1."""
    repository = f"datadoghq/{unique_repository('dd-lib-slow')}"
    layer = files_layer({f"{CONTENT}/version": f"{name}\n"})
    return registry.push_image(repository, [layer], tag="v1", platform=HOST_PLATFORM)


def attributes(registry: OciRegistry, image: PushedImage) -> dict[str, str]:
    return library_attributes(registry.host, image.repository, "v1")


def held_downloads(registry: OciRegistry, image: PushedImage) -> list:
    """The layer downloads of ``image`` the registry has not answered yet."""
    return [r for r in registry.requests(image.repository, "blobs")
            if r.reference == image.layers[0].digest and r.status == 0]


def stall_downloads(registry: OciRegistry, images: list[PushedImage]) -> None:
    registry.fault_seconds = HOLD_SECONDS
    for image in images:
        registry.inject(f"{image.repository}/blobs/{image.layers[0].digest}", Fault.STALL)


def start_stuck_publishes(pool: ThreadPoolExecutor, node: LibraryNode, registry: OciRegistry,
                          images: list[PushedImage]) -> list[tuple[PushedImage, str, Future]]:
    """A publish of each library, and FOLLOWERS more of the first one, each for a pod
    of its own; returns once the registry holds a download of every library."""
    stuck = []
    for image in [*images, *[images[0]] * FOLLOWERS]:
        pod_uid = str(uuid.uuid4())
        future = pool.submit(node.publish, attributes(registry, image), pod_uid=pod_uid)
        stuck.append((image, pod_uid, future))
    wait_for("every library's download to reach the registry (does a call that waits on a "
             "download keep the turn other calls need?)",
             lambda: all(held_downloads(registry, image) for image in images),
             timeout=60, interval=0.05)
    return stuck


def publish_and_unpublish(node: LibraryNode, volume_attributes: dict[str, str]) -> dict:
    """One pod's volume, published, looked at from the pod, unpublished."""
    target = node.publish(volume_attributes, timeout=30)
    seen = in_pod(target, "version") if volume_attributes["type"] == "DatadogLibrary" else {}
    node.unpublish(target)
    assert mounts_under(target) == []
    return seen


def test_stuck_downloads_leave_other_calls_alone_then_finish(node, oci_registry):
    cached = push_library(oci_registry, "cached")
    publish_and_unpublish(node, attributes(oci_registry, cached))  # now in the store
    slow = [push_library(oci_registry, f"slow-{i}") for i in range(SLOW_LIBRARIES)]
    stall_downloads(oci_registry, slow)

    with ThreadPoolExecutor(SLOW_LIBRARIES + FOLLOWERS) as pool:
        stuck = start_stuck_publishes(pool, node, oci_registry, slow)
        served = []
        for _ in range(3):
            for volume in ({"type": "DSDSocket"}, {"type": "DSDSocketDirectory"},
                           attributes(oci_registry, cached)):
                served.append(publish_and_unpublish(node, volume))
        # Every call above finished while every download was still held back.
        assert all(held_downloads(oci_registry, image) for image in slow)
        assert not any(future.done() for _, _, future in stuck)
        assert [seen["content"] for seen in served if seen] == ["cached\n"] * 3

        oci_registry.release()
        targets = [future.result(timeout=60) for _, _, future in stuck]

    for (image, _, _), target in zip(stuck, targets, strict=True):
        assert in_pod(target, "version")["content"] == f"slow-{slow.index(image)}\n"
    for image in slow:  # downloaded once each, followers included
        assert oci_registry.count(image.repository, "blobs", successful=True) == 1
    assert node.stored() == sorted(image.digest for image in [cached, *slow])
    assert os.listdir(os.path.join(node.storage, "tmp")) == []
    for image in [cached, *slow]:
        package = image.repository.rpartition("/")[2]
        assert node.metric(DOWNLOADS, library=package, registry=oci_registry.host) == 1
        assert node.metric(CACHED, library=package) == 1
    assert node.metric(LINKS, library=slow[0].repository.rpartition("/")[2]) == 1 + FOLLOWERS
    for image in [cached, *slow]:  # a publish that waited for a pull counts as downloaded too
        package = image.repository.rpartition("/")[2]
        waited = FOLLOWERS if image is slow[0] else 0
        assert node.metric(RESOLUTIONS, library=package, result="downloaded") == 1 + waited
        assert node.metric(RESOLUTIONS, library=package, result="cache_hit") == (3 if image is cached else 0)
        assert node.metric(RESOLUTIONS, library=package, result="failed") == 0

    for target in targets:
        node.unpublish(target)
        assert mounts_under(target) == []
    for image in [cached, *slow]:
        assert node.metric(LINKS, library=image.repository.rpartition("/")[2]) == 0
    assert node.stored() == sorted(image.digest for image in [cached, *slow])
    assert node.metric(PUBLISHES, type="DSDSocket", path=node.dsd_path, status="success") == 3

    node.restart()  # what was persisted agrees with the store
    assert node.stored() == sorted(image.digest for image in [cached, *slow])
    for image in [cached, *slow]:
        package = image.repository.rpartition("/")[2]
        assert node.metric(CACHED, library=package) == 1
        assert node.metric(LINKS, library=package) == 0


def test_stopping_the_driver_ends_stuck_downloads(node, oci_registry, kubelet_root):
    slow = [push_library(oci_registry, f"slow-{i}") for i in range(SLOW_LIBRARIES)]
    stall_downloads(oci_registry, slow)

    with ThreadPoolExecutor(SLOW_LIBRARIES + FOLLOWERS) as pool:
        stuck = start_stuck_publishes(pool, node, oci_registry, slow)
        assert node.driver.terminate(timeout=GRACE_SECONDS) == 0
        # The driver is gone and the registry has still not answered those downloads.
        assert all(held_downloads(oci_registry, image) for image in slow)
        failures = []
        for _, _, future in stuck:
            with pytest.raises(grpc.RpcError) as raised:
                future.result(timeout=30)
            failures.append((raised.value.code(), raised.value.details()))

    for code, message in failures:
        assert code == grpc.StatusCode.UNAVAILABLE, message
        assert "driver is shutting down" in message and "the kubelet retries" in message, message
    assert os.listdir(os.path.join(node.storage, "tmp")) == []
    assert node.stored() == []
    assert mounts_under(kubelet_root) == []

    # The kubelet retries against the next driver process, and the registry answers.
    oci_registry.release()
    node.start()
    for image, pod_uid, _ in stuck:
        target = node.publish(attributes(oci_registry, image), pod_uid=pod_uid)
        assert in_pod(target, "version")["content"] == f"slow-{slow.index(image)}\n"
        node.unpublish(target)
    assert node.stored() == sorted(image.digest for image in slow)


def test_abort_ends_a_download_in_progress_and_refuses_later_pulls(oci_registry):
    image = push_library(oci_registry, "aborted")
    client = RegistryClient(Credentials.from_environ({}))
    ref = ImageReference(oci_registry.host, image.repository, "v1", None)
    layer = client.resolve(ref, time.monotonic() + 20).layers[0]
    oci_registry.fault_seconds = HOLD_SECONDS
    oci_registry.inject(layer.digest, Fault.TRICKLE)  # a byte every 0.2 s: never idle, never done
    with ThreadPoolExecutor(1) as pool:
        download = pool.submit(client.fetch_blob, ref, layer, io.BytesIO(), time.monotonic() + 60,
                               1 << 20)
        wait_for("the download to start", lambda: oci_registry.requests(image.repository, "blobs"),
                 timeout=60, interval=0.05)
        client.abort("the driver is shutting down")
        with pytest.raises(RegistryError) as aborted:
            download.result(timeout=30)
    assert aborted.value.code == grpc.StatusCode.UNAVAILABLE
    assert aborted.value.message == f"{ref}: the driver is shutting down"

    asked = len(oci_registry.requests(image.repository))
    with pytest.raises(RegistryError) as refused:
        client.resolve(ref, time.monotonic() + 20)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert "the driver is shutting down" in refused.value.message
    assert len(oci_registry.requests(image.repository)) == asked  # not even asked
