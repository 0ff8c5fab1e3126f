"""CSI Node service: validation, per-volume locking, dispatch, metrics and logs.

Each call produces exactly one log line (volume id, target, type, outcome,
duration) and one metrics observation, whatever path it takes.
"""

from __future__ import annotations

import logging
import time

import grpc

from csi_driver import requests, targets, volume_stats
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
from csi_driver.errors import RequestError, invalid, not_found
from csi_driver.locks import KeyedLocks
from csi_driver.metrics import FAILED, SUCCESS, UNSUPPORTED, Metrics
from csi_driver.publisher import Publisher
from csi_driver.volumes import type_label

log = logging.getLogger("csi_driver.node")
_RPC = csi_pb2.NodeServiceCapability.RPC
class NodeService(csi_pb2_grpc.NodeServicer):
    def __init__(self, config: Config, metrics: Metrics, publisher: Publisher) -> None:
        self._config = config
        self._metrics = metrics
        self._publisher = publisher
        self._locks = KeyedLocks()

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    # ------------------------------------------------------------ publish

    def NodePublishVolume(self, request, context):  # noqa: N802 (gRPC method names)
        call = _Call("NodePublishVolume", "published")
        volume_type, path = type_label(request.volume_context), ""
        with call:
            req = requests.publish(request, self._config)
            volume_type, path = req.source.type, req.source.host_path
            if req.source.deprecation:
                log.warning(f"volume uses a deprecated form: {req.source.deprecation}",
                            extra={"volume_id": req.volume_id, "type": req.source.type})
            with self._locks.hold("volume:" + req.volume_id, "target:" + req.target.path):
                if not self._publisher.publish(req):
                    call.message = "already published"
            self._metrics.published_volumes.labels(type=volume_type).set(
                self._publisher.count(volume_type))
        self._metrics.publish(volume_type, path, call.status, call.elapsed)
        call.log(request.volume_id, request.target_path, volume_type, readonly=request.readonly)
        return call.answer(context, csi_pb2.NodePublishVolumeResponse())

    def NodeUnpublishVolume(self, request, context):  # noqa: N802
        call = _Call("NodeUnpublishVolume", "unpublished")
        volume_type = ""
        with call:
            req = requests.unpublish(request, self._config)
            with self._locks.hold("volume:" + req.volume_id, "target:" + req.target.path):
                known = self._publisher.lookup(req.target.path)
                volume_type = known.source.type if known else ""
                if not self._publisher.unpublish(req):
                    call.message = "target already gone"
            if volume_type:
                self._metrics.published_volumes.labels(type=volume_type).set(
                    self._publisher.count(volume_type))
        self._metrics.unpublish(call.status, call.elapsed)
        call.log(request.volume_id, request.target_path, volume_type)
        return call.answer(context, csi_pb2.NodeUnpublishVolumeResponse())

    # ------------------------------------------------------- volume stats

    def NodeGetVolumeStats(self, request, context):  # noqa: N802
        try:
            requests.volume_id(request.volume_id)
            if not request.volume_path:
                raise invalid("volume_path is required")
            try:
                target = targets.parse(request.volume_path, self._config.pods_dir, "volume_path")
            except RequestError as err:
                raise not_found(f"no volume published at {request.volume_path!r}: {err.message}") from None
            return volume_stats.stats(request.volume_id, target, self._publisher, self._config)
        except RequestError as err:
            context.abort(err.code, err.message)

    # ----------------------------------------------------- node metadata

    def NodeGetCapabilities(self, request, context):  # noqa: N802
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[
            csi_pb2.NodeServiceCapability(rpc=_RPC(type=_RPC.GET_VOLUME_STATS)),
            csi_pb2.NodeServiceCapability(rpc=_RPC(type=_RPC.VOLUME_CONDITION)),
        ])

    def NodeGetInfo(self, request, context):  # noqa: N802
        return csi_pb2.NodeGetInfoResponse(node_id=self._config.node_id)

    def NodeStageVolume(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "NodeStageVolume is not supported: socket volumes need no staging")

    def NodeUnstageVolume(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "NodeUnstageVolume is not supported: socket volumes need no staging")

    def NodeExpandVolume(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "NodeExpandVolume is not supported: "
                      "socket volumes have no size")


class _Call:
    """The outcome of one publish or unpublish, whatever path it takes.

    Used as ``with call:`` around the work: a ``RequestError`` becomes its
    status, anything else INTERNAL (never a silent success). The caller then
    records metrics and the log line, and ``answer`` replies or aborts.
    """

    def __init__(self, method: str, message: str) -> None:
        self.method = method
        self.status, self.code, self.message = SUCCESS, grpc.StatusCode.OK, message
        self._started = time.perf_counter()
        self.elapsed = 0.0

    def __enter__(self) -> "_Call":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.elapsed = time.perf_counter() - self._started
        if exc is None:
            return False
        if isinstance(exc, RequestError):
            self.status = UNSUPPORTED if exc.unsupported else FAILED
            self.code, self.message = exc.code, exc.message
        elif isinstance(exc, Exception):
            self.status, self.code = FAILED, grpc.StatusCode.INTERNAL
            self.message = f"unexpected error: {exc}"
            log.error(f"{self.method} failed unexpectedly", exc_info=(exc_type, exc, tb))
        else:
            return False  # KeyboardInterrupt, SystemExit: not ours to swallow
        return True

    def log(self, volume_id: str, target: str, volume_type: str, **fields: object) -> None:
        level = logging.INFO if self.code == grpc.StatusCode.OK else logging.WARNING
        log.log(level, f"{self.method}: {self.message}", extra={
            "method": self.method,
            "volume_id": volume_id[:256],
            "target_path": target[:4096],
            "type": volume_type,
            "outcome": self.code.name,
            "duration_ms": round(self.elapsed * 1000, 3),
            **fields,
        })

    def answer(self, context, response):
        if self.code != grpc.StatusCode.OK:
            context.abort(self.code, self.message)
        return response

