"""A stand-in CSI Controller for csi-sanity's two specs that create a volume.

csi-sanity publishes a real volume only after ``CreateVolume`` on a controller
endpoint; the volume context it then sends to ``NodePublishVolume`` is exactly
the ``volume_context`` that call returned. This controller echoes the test's
volume parameters (``--csi.testvolumeparameters``) back as that context, so the
node driver receives ``{"type": "DSDSocket"}`` as if a pod had asked for it.

Its stubs come from ``proto/controller.proto`` (tests only), compiled here with
grpc_tools; the proto imports the driver's own ``csi.proto`` messages.
"""

from __future__ import annotations

import importlib
import sys
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc

from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2_grpc
from csi_driver.identity import IdentityService

PROTO_DIR = Path(__file__).resolve().parent / "proto"
REPO = Path(__file__).resolve().parents[2]


def compile_stubs(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """Compile controller.proto into ``out_dir``; return (messages, services)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        # The same virtual path as build_support/protogen.py, so the import
        # resolves to the csi_pb2 module the driver package already ships.
        f"--proto_path=csi_driver/csi/v1={REPO / 'proto'}",
        f"--proto_path={PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "controller.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    sys.path.insert(0, str(out_dir))
    try:
        return importlib.import_module("controller_pb2"), importlib.import_module("controller_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))


class FakeController:
    """Identity + Controller on a Unix socket; volumes exist only in name."""

    def __init__(self, socket_path: str, stubs_dir: Path, driver_name: str) -> None:
        self.socket_path = socket_path
        self.created: list[str] = []
        self.deleted: list[str] = []
        pb2, pb2_grpc = compile_stubs(stubs_dir)
        outer = self

        class Controller(pb2_grpc.ControllerServicer):
            def CreateVolume(self, request, context):
                if not request.name:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name is required")
                volume_id = "csi-" + request.name
                outer.created.append(volume_id)
                return pb2.CreateVolumeResponse(volume=pb2.Volume(
                    volume_id=volume_id, capacity_bytes=request.capacity_range.required_bytes,
                    volume_context=dict(request.parameters)))

            def DeleteVolume(self, request, context):
                outer.deleted.append(request.volume_id)
                return pb2.DeleteVolumeResponse()

            def ControllerGetCapabilities(self, request, context):
                rpc = pb2.ControllerServiceCapability.RPC
                return pb2.ControllerGetCapabilitiesResponse(capabilities=[
                    pb2.ControllerServiceCapability(rpc=rpc(type=rpc.CREATE_DELETE_VOLUME))])

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb2_grpc.add_ControllerServicer_to_server(Controller(), self._server)
        csi_pb2_grpc.add_IdentityServicer_to_server(
            IdentityService(Config(driver_name=driver_name, node_id="controller")), self._server)
        self._server.add_insecure_port(f"unix://{socket_path}")

    def start(self) -> FakeController:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait()
