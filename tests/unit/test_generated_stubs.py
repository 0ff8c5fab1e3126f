"""The stubs in the package are exactly what the protos in proto/ compile to."""

from __future__ import annotations

import importlib
from pathlib import Path

from build_support.protogen import PACKAGES, generate, generated_names

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos(tmp_path):
    fresh = generate(REPO, tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in fresh) == sorted(
        package / name for proto, package in PACKAGES.items() for name in generated_names(proto))
    for path in fresh:
        module_name = ".".join(path.relative_to(tmp_path).with_suffix("").parts)
        installed = Path(importlib.import_module(module_name).__file__ or "")
        assert installed.read_bytes() == path.read_bytes(), (
            f"{installed} differs from what proto/ generates; reinstall the package")
    # Compiled under their package's own path, the gRPC modules import the
    # messages by their full name, so they work wherever the package is installed.
    for proto, package in PACKAGES.items():
        stem = proto.removesuffix(".proto")
        grpc_module = (tmp_path / package / f"{stem}_pb2_grpc.py").read_text()
        assert f"from {'.'.join(package.parts)} import {stem}_pb2 as" in grpc_module


def test_typed_stubs_describe_the_servicers(tmp_path):
    """The .pyi stubs the type check relies on type each handler's request and response."""
    fresh = generate(REPO, tmp_path, stubs=True)
    assert sum(p.suffix == ".pyi" for p in fresh) == 2 * len(PACKAGES)
    stub = (tmp_path / PACKAGES["csi.proto"] / "csi_pb2_grpc.pyi").read_text()
    assert "class NodeServicer" in stub
    assert "request: csi_driver.csi.v1.csi_pb2.NodePublishVolumeRequest" in stub


def test_wire_identity_with_the_csi_spec():
    """Spot-check field numbers the kubelet and csi-sanity depend on."""
    from csi_driver.csi.v1 import csi_pb2

    fields = {f.name: f.number for f in csi_pb2.NodePublishVolumeRequest.DESCRIPTOR.fields}
    assert fields == {"volume_id": 1, "publish_context": 2, "staging_target_path": 3, "target_path": 4,
                      "volume_capability": 5, "readonly": 6, "secrets": 7, "volume_context": 8}
    assert csi_pb2.DESCRIPTOR.package == "csi.v1"
    services = {s.full_name for s in csi_pb2.DESCRIPTOR.services_by_name.values()}
    assert services == {"csi.v1.Identity", "csi.v1.Node"}
    mode = csi_pb2.VolumeCapability.AccessMode.Mode
    assert mode.Value("SINGLE_NODE_MULTI_WRITER") == 7
    assert csi_pb2.NodeServiceCapability.RPC.Type.Value("VOLUME_CONDITION") == 4


def test_wire_identity_with_the_kubelet_registration_api():
    from csi_driver.pluginregistration.v1 import pluginregistration_pb2 as api

    assert api.DESCRIPTOR.package == "pluginregistration"
    service = api.DESCRIPTOR.services_by_name["Registration"]
    assert service.full_name == "pluginregistration.Registration"
    assert sorted(service.methods_by_name) == ["GetInfo", "NotifyRegistrationStatus"]
    assert {f.name: f.number for f in api.PluginInfo.DESCRIPTOR.fields} == {
        "type": 1, "name": 2, "endpoint": 3, "supported_versions": 4}
    assert {f.name: f.number for f in api.RegistrationStatus.DESCRIPTOR.fields} == {
        "plugin_registered": 1, "error": 2}
