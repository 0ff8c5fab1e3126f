"""Built-in kubelet plugin registration: the registrar sidecar, made optional.

The kubelet's plugin watcher looks for sockets in ``<kubelet-root>/plugins_registry``,
asks each who it is (``GetInfo``), registers a CSI plugin under that name at the
endpoint it gives, and reports the outcome (``NotifyRegistrationStatus``).
With ``--kubelet-registration-path`` (the CSI socket as the kubelet sees it,
which in a container differs from ``--csi-endpoint``), the driver serves that
API itself on ``<kubelet-root>/plugins_registry/<driver-name>-reg.sock``, as
``csi-node-driver-registrar`` would. Removing the socket, at shutdown,
deregisters the driver.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures

import grpc

from csi_driver.config import Config
from csi_driver.endpoint import claim_endpoint, listen_unix
from csi_driver.pluginregistration.v1 import pluginregistration_pb2 as api
from csi_driver.pluginregistration.v1 import pluginregistration_pb2_grpc as api_grpc

log = logging.getLogger("csi_driver.registration")
CSI_PLUGIN = "CSIPlugin"
# The CSI versions this driver speaks, as the registrar announces them.
SUPPORTED_VERSIONS = ("1.0.0",)


def socket_path(config: Config) -> str:
    return os.path.join(config.kubelet_root_dir, "plugins_registry", f"{config.driver_name}-reg.sock")


class RegistrationService(api_grpc.RegistrationServicer):
    def __init__(self, config: Config) -> None:
        self._config = config
        self.registered = threading.Event()
        self.last_error = ""

    def GetInfo(self, request: api.InfoRequest, context: grpc.ServicerContext) -> api.PluginInfo:
        return api.PluginInfo(type=CSI_PLUGIN, name=self._config.driver_name,
                              endpoint=self._config.kubelet_registration_path,
                              supported_versions=SUPPORTED_VERSIONS)

    def NotifyRegistrationStatus(self, request: api.RegistrationStatus, context: grpc.ServicerContext
                                 ) -> api.RegistrationStatusResponse:
        if request.plugin_registered:
            self.last_error = ""
            self.registered.set()
            log.info("registered with the kubelet",
                     extra={"driver_name": self._config.driver_name,
                            "endpoint": self._config.kubelet_registration_path})
        else:
            self.last_error = request.error
            self.registered.clear()
            log.error(f"the kubelet refused the registration: {request.error}",
                      extra={"driver_name": self._config.driver_name,
                             "endpoint": self._config.kubelet_registration_path})
        return api.RegistrationStatusResponse()


class RegistrationServer:
    """The registration API on its own socket: the kubelet only ever sees this
    API there, and the CSI services only on the CSI endpoint."""

    def __init__(self, config: Config) -> None:
        self.path = socket_path(config)
        self.service = RegistrationService(config)
        self._server: grpc.Server | None = None

    def start(self) -> None:
        claim_endpoint(self.path)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reg"),
                             options=[("grpc.so_reuseport", 0)])
        api_grpc.add_RegistrationServicer_to_server(self.service, server)
        listen_unix(server, self.path)
        server.start()
        self._server = server
        log.info("serving kubelet plugin registration", extra={"socket": self.path})

    def stop(self) -> None:
        """Remove the socket first: the kubelet's watcher deregisters the driver."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self._server is not None:
            self._server.stop(1).wait()
            self._server = None
