"""The stubs in the package are exactly what proto/csi.proto compiles to."""

from __future__ import annotations

from pathlib import Path

from build_support.protogen import GENERATED, PACKAGE_DIR, generate

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_matches_proto(tmp_path):
    import csi_driver.csi.v1 as package

    installed = Path(package.__file__).parent
    fresh = generate(REPO, tmp_path)
    for path in fresh:
        assert (installed / path.name).read_bytes() == path.read_bytes(), (
            f"{installed / path.name} differs from what proto/csi.proto generates; reinstall the package")
    assert sorted(p.name for p in fresh) == sorted(GENERATED)
    assert PACKAGE_DIR.as_posix() == "csi_driver/csi/v1"


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
