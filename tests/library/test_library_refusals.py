"""Every way a library volume is refused gets its documented status and leaves nothing.

Allow list: PERMISSION_DENIED naming the list. ``--apm-enabled=false``:
FAILED_PRECONDITION for both types. Refused credentials: PERMISSION_DENIED.
Registry down or too slow: UNAVAILABLE (the kubelet retries). Unknown tag:
NOT_FOUND. Storage missing or read-only: FAILED_PRECONDITION naming the path,
while socket volumes keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from support import kubelet
from support.driver import free_port
from support.library_driver import PRELOAD, TYPE, LibraryNode, library_attributes, publish_error
from support.oci_registry import HOST_PLATFORM, PASSWORD, PRIVATE_PREFIX, Fault, dockerconfigjson, files_layer
from support.snapshot import mounts_under

RESOLUTIONS = "datadog_csi_driver_library_resolutions_total"
ATTEMPTS = "datadog_csi_driver_node_publish_volume_attempts"
FILES = {"datadog-init/package/version": "1\n"}


@pytest.fixture
def make_node(tmp_path, kubelet_root, agent):
    started: list[LibraryNode] = []

    def make(*extra_args: str, env: dict[str, str] | None = None, create_storage: bool = True
             ) -> LibraryNode:
        node = LibraryNode(str(tmp_path / f"node{len(started)}"), kubelet_root, agent.dsd_path,
                           agent.apm_path, extra_args=list(extra_args), env=env or {},
                           create_storage=create_storage).start()
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


def refused(node: LibraryNode, attributes: dict[str, str]) -> tuple[str, str]:
    uid = str(uuid.uuid4())
    code, message = publish_error(lambda: node.publish(attributes, pod_uid=uid, timeout=60))
    target = kubelet.target_path(node.kubelet_root, uid, "lib")
    assert not os.path.lexists(target) and mounts_under(target) == []
    return code, message


def assert_nothing_stored(node: LibraryNode) -> None:
    assert node.stored() == []
    scratch = os.path.join(node.storage, "tmp")
    assert not os.path.isdir(scratch) or os.listdir(scratch) == []


def socket_volume_works(node: LibraryNode) -> None:
    uid = str(uuid.uuid4())
    target = kubelet.prepare_volume_dir(node.kubelet_root, uid, "dd")
    node.node.NodePublishVolume(kubelet.publish_request(node.kubelet_root, uid, "dd",
                                                        {"type": "DSDSocketDirectory"}))
    assert [point for _root, point in mounts_under(target)] == [target]
    node.unpublish(target)


def test_a_registry_outside_the_allow_list_is_refused(make_node, oci_registry):
    node = make_node("--registry-allow-list=gcr.io/datadoghq,public.ecr.aws/datadog")
    image = oci_registry.push_image("datadoghq/dd-lib-allow-test", [files_layer(FILES)], tag="v1")
    code, message = refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "PERMISSION_DENIED"
    assert "gcr.io/datadoghq, public.ecr.aws/datadog" in message and oci_registry.host in message
    assert oci_registry.requests(image.repository) == []
    assert_nothing_stored(node)
    assert node.metric(ATTEMPTS, type=TYPE, path="", status="failed") == 1
    assert not [key for key in node.metrics() if key[0] == RESOLUTIONS]


def test_apm_disabled_refuses_both_types_and_serves_sockets(make_node, oci_registry):
    node = make_node("--apm-enabled=false")
    for attributes in ({"type": PRELOAD},
                       library_attributes(oci_registry.host, "datadoghq/dd-lib-x", "v1")):
        code, message = refused(node, attributes)
        assert code == "FAILED_PRECONDITION" and "--apm-enabled=false" in message
    socket_volume_works(node)
    assert node.metric(ATTEMPTS, type=TYPE, path="", status="failed") == 1
    assert node.metric(ATTEMPTS, type=PRELOAD, path="", status="failed") == 1


@pytest.mark.parametrize("credentials", ["none", "wrong", "right"])
def test_registry_credentials(make_node, oci_registry, basic_registry, credentials):
    for registry, repository in ((oci_registry, f"{PRIVATE_PREFIX}dd-lib-{uuid.uuid4().hex[:8]}"),
                                 (basic_registry, f"datadoghq/dd-lib-{uuid.uuid4().hex[:8]}")):
        image = registry.push_image(repository, [files_layer(FILES)], tag="v1")
        env = {}
        if credentials != "none":
            password = PASSWORD if credentials == "right" else "not-the-password"
            env["DD_APM_REGISTRY_AUTH_0"] = dockerconfigjson(registry.host, password=password)
        node = make_node(env=env)
        attributes = library_attributes(registry.host, repository, "v1")
        if credentials == "right":
            target = node.publish(attributes)
            assert node.stored() == [image.digest]
            node.unpublish(target)
            continue
        code, message = refused(node, attributes)
        assert code == "PERMISSION_DENIED", message
        assert repository in message
        assert_nothing_stored(node)
        assert node.metric(RESOLUTIONS, library="other", result="failed") == 1


def test_registry_down_is_unavailable(make_node, oci_registry):
    node = make_node()
    nobody = f"127.0.0.1:{free_port()}"
    code, message = refused(node, library_attributes(nobody, "datadoghq/dd-lib-java-init", "v1"))
    assert code == "UNAVAILABLE" and nobody in message
    # A known package keeps its name as label even before it is stored.
    assert node.metric(RESOLUTIONS, library="dd-lib-java-init", result="failed") == 1

    image = oci_registry.push_image("datadoghq/dd-lib-503", [files_layer(FILES)], tag="v1")
    oci_registry.inject(image.repository, Fault.UNAVAILABLE)
    code, _ = refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "UNAVAILABLE"
    assert_nothing_stored(node)
    socket_volume_works(node)


def test_an_unknown_tag_is_not_found(make_node, oci_registry):
    node = make_node()
    image = oci_registry.push_image(f"datadoghq/dd-lib-{uuid.uuid4().hex[:8]}", [files_layer(FILES)],
                                    tag="v1")
    code, message = refused(node, library_attributes(oci_registry.host, image.repository, "v2"))
    assert code == "NOT_FOUND" and image.repository in message
    assert_nothing_stored(node)


def test_a_pull_past_the_download_timeout_is_unavailable(make_node, oci_registry):
    node = make_node("--library-download-timeout=3s")
    image = oci_registry.push_image(f"datadoghq/dd-lib-{uuid.uuid4().hex[:8]}", [files_layer(FILES)],
                                    tag="v1")
    oci_registry.inject(image.layers[0].digest, Fault.STALL)
    code, message = refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "UNAVAILABLE", message
    assert_nothing_stored(node)
    oci_registry.reset()  # the registry answers again: the kubelet's retry succeeds
    node.unpublish(node.publish(library_attributes(oci_registry.host, image.repository, "v1")))
    assert node.metric(RESOLUTIONS, library="other", result="failed") == 1
    assert node.metric(RESOLUTIONS, library=image.repository.rpartition("/")[2],
                       result="downloaded") == 1


def _disabled_line_count(node: LibraryNode) -> int:
    """Start-up lines saying the family is disabled (each refused call logs its own too)."""
    lines = [json.loads(line) for line in node.logs().splitlines() if line.startswith("{")]
    return sum(line["logger"] == "csi_driver.library.family" and "disabled" in line["msg"]
               for line in lines)


def test_missing_storage_disables_only_the_library_family(make_node, oci_registry):
    node = make_node(create_storage=False)
    for attributes in ({"type": PRELOAD},
                       library_attributes(oci_registry.host, "datadoghq/dd-lib-x", "v1")):
        code, message = refused(node, attributes)
        assert code == "FAILED_PRECONDITION" and node.storage in message and "does not exist" in message
    assert _disabled_line_count(node) == 1
    socket_volume_works(node)


def test_read_only_storage_disables_only_the_library_family(make_node, oci_registry, tmp_path):
    storage = tmp_path / "node0" / "storage"
    storage.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(storage), str(storage)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(storage)], check=True)
        node = make_node()
        code, message = refused(node, library_attributes(oci_registry.host, "datadoghq/dd-lib-x", "v1"))
        assert code == "FAILED_PRECONDITION" and str(storage) in message and "not writable" in message
        assert _disabled_line_count(node) == 1
        socket_volume_works(node)
        node.stop()
    finally:
        subprocess.run(["umount", str(storage)], check=True)


def test_an_image_index_without_this_platform_is_refused(make_node, oci_registry):
    node = make_node()
    other = ("linux", "s390x") if HOST_PLATFORM[1] != "s390x" else ("linux", "ppc64le")
    index = oci_registry.push_index(f"datadoghq/dd-lib-{uuid.uuid4().hex[:8]}",
                                    {other: [files_layer(FILES)]}, tag="v1")
    code, _ = refused(node, library_attributes(oci_registry.host, index.repository, "v1"))
    assert code == "FAILED_PRECONDITION"
    assert_nothing_stored(node)


def test_an_image_without_the_library_directory_is_refused(make_node, oci_registry):
    node = make_node()
    image = oci_registry.push_image(f"datadoghq/dd-lib-{uuid.uuid4().hex[:8]}",
                                    [files_layer({"usr/lib/other": "x"})], tag="v1")
    code, message = refused(node, library_attributes(oci_registry.host, image.repository, "v1"))
    assert code == "FAILED_PRECONDITION" and "datadog-init/package" in message
    assert_nothing_stored(node)
