"""CSI Node service: validate, lock, do one thing, answer.

Statuses, log lines and metrics are the outcome layer's job
(``interceptors.Outcomes``): handlers raise ``RequestError`` and describe the
call through ``interceptors.current()``.
"""

from __future__ import annotations

import logging

import grpc

from csi_driver import targets, validation, volume_stats
from csi_driver.agent_wait import AgentWait
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
from csi_driver.errors import RequestError, invalid, not_found, unimplemented
from csi_driver.interceptors import current
from csi_driver.locks import KeyedLocks
from csi_driver.publisher import Publisher
from csi_driver.stale_events import StaleEvents
from csi_driver.volumes import type_label

log = logging.getLogger("csi_driver.node")
_RPC = csi_pb2.NodeServiceCapability.RPC


class NodeService(csi_pb2_grpc.NodeServicer):
    def __init__(self, config: Config, publisher: Publisher, agent_wait: AgentWait | None = None,
                 stale_events: StaleEvents | None = None) -> None:
        self._config = config
        self._publisher = publisher
        self._locks = KeyedLocks()
        self._agent_wait = agent_wait
        self._stale_events = stale_events or StaleEvents()

    def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        call = current()
        call.volume_type = type_label(request.volume_context)
        req = validation.publish(request, self._config)
        call.volume_type, call.host_path = req.source.type, req.source.host_path
        if req.source.deprecation:
            log.warning(f"volume uses a deprecated form: {req.source.deprecation}",
                        extra={"volume_id": req.volume_id, "type": req.source.type})
        if req.wait_for_agent and self._agent_wait is not None:
            self._agent_wait.until_present(req.source, req.wait_for_agent)
        with self._locks.hold("volume:" + req.volume_id, "target:" + req.target.path):
            if not self._publisher.publish(req):
                call.message = "already published"
            self._stale_events.remember(req, request.volume_context)
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest,
                            context: grpc.ServicerContext) -> csi_pb2.NodeUnpublishVolumeResponse:
        call = current()
        req = validation.unpublish(request, self._config)
        with self._locks.hold("volume:" + req.volume_id, "target:" + req.target.path):
            known = self._publisher.published.lookup(req.target.path)
            call.volume_type = known.source.type if known else ""
            if not self._publisher.unpublish(req):
                call.message = "target already gone"
            self._stale_events.forget(req.target.path)
        return csi_pb2.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest,
                           context: grpc.ServicerContext) -> csi_pb2.NodeGetVolumeStatsResponse:
        validation.volume_id(request.volume_id)
        if not request.volume_path:
            raise invalid("volume_path is required")
        try:
            target = targets.parse(request.volume_path, self._config.pods_dir, "volume_path")
        except RequestError as err:
            raise not_found(f"no volume published at {request.volume_path!r}: {err.message}") from None
        response = volume_stats.stats(request.volume_id, target, self._publisher.published,
                                      self._publisher.sources, self._config)
        condition = response.volume_condition
        current().message = f"{'abnormal' if condition.abnormal else 'normal'}: {condition.message}"
        return response

    def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest,
                            context: grpc.ServicerContext) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[
            csi_pb2.NodeServiceCapability(rpc=_RPC(type=_RPC.GET_VOLUME_STATS)),
            csi_pb2.NodeServiceCapability(rpc=_RPC(type=_RPC.VOLUME_CONDITION)),
        ])

    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest,
                    context: grpc.ServicerContext) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self._config.node_id)

    def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest,
                        context: grpc.ServicerContext) -> csi_pb2.NodeStageVolumeResponse:
        raise unimplemented("NodeStageVolume is not supported: socket volumes need no staging")

    def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodeUnstageVolumeResponse:
        raise unimplemented("NodeUnstageVolume is not supported: socket volumes need no staging")

    def NodeExpandVolume(self, request: csi_pb2.NodeExpandVolumeRequest,
                         context: grpc.ServicerContext) -> csi_pb2.NodeExpandVolumeResponse:
        raise unimplemented("NodeExpandVolume is not supported: socket volumes have no size")
