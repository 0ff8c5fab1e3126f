"""CSI Identity service: who this plugin is and whether it is ready."""

from __future__ import annotations

import grpc
from google.protobuf import wrappers_pb2

from csi_driver import __version__
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc


class IdentityService(csi_pb2_grpc.IdentityServicer):
    def __init__(self, config: Config) -> None:
        self._config = config

    def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest,
                      context: grpc.ServicerContext) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=self._config.driver_name,
                                             vendor_version=__version__)

    def GetPluginCapabilities(self, request: csi_pb2.GetPluginCapabilitiesRequest,
                              context: grpc.ServicerContext
                              ) -> csi_pb2.GetPluginCapabilitiesResponse:
        # Node-only plugin: no CONTROLLER_SERVICE, no topology constraints.
        return csi_pb2.GetPluginCapabilitiesResponse()

    def Probe(self, request: csi_pb2.ProbeRequest,
              context: grpc.ServicerContext) -> csi_pb2.ProbeResponse:
        # Nothing to warm up: once the server answers, publishing works.
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
