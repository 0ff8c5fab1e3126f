# ruff: noqa: N802 (servicer methods carry the CSI RPC names)
"""A CSI plugin that does nothing, on grpcio: the Python transport's floor.

``python -m bench.noop_server --endpoint PATH`` serves csi.v1 Identity
(GetPluginInfo, Probe, GetPluginCapabilities) and Node (NodePublishVolume,
NodeUnpublishVolume, NodeGetInfo) on the Unix socket PATH until SIGTERM, every
answer an empty message. It is built as the driver's server is (a synchronous
``grpc.server`` on a thread pool, the same stubs), so a driver call's time
over this server's is what the driver's own work costs. With ``--aio`` it
serves the same answers from ``grpc.aio`` (one event loop, no thread pool
handoff), the other server model grpcio offers.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from concurrent import futures
from types import FrameType

import grpc

from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc

# As many workers as the driver's pool has had: for empty answers the count
# hardly matters on 2 CPUs (the GIL serializes the Python part anyway).
WORKERS = 3


class NoopIdentity(csi_pb2_grpc.IdentityServicer):
    def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest,
                      context: grpc.ServicerContext) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name="noop.bench.csi", vendor_version="0.0.0")

    def GetPluginCapabilities(self, request: csi_pb2.GetPluginCapabilitiesRequest,
                              context: grpc.ServicerContext) -> csi_pb2.GetPluginCapabilitiesResponse:
        return csi_pb2.GetPluginCapabilitiesResponse()

    def Probe(self, request: csi_pb2.ProbeRequest,
              context: grpc.ServicerContext) -> csi_pb2.ProbeResponse:
        return csi_pb2.ProbeResponse()


class NoopNode(csi_pb2_grpc.NodeServicer):
    def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest,
                            context: grpc.ServicerContext) -> csi_pb2.NodeUnpublishVolumeResponse:
        return csi_pb2.NodeUnpublishVolumeResponse()

    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest,
                    context: grpc.ServicerContext) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id="test-node")


def serve(endpoint: str, workers: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="noop"),
                         options=[("grpc.so_reuseport", 0)])
    csi_pb2_grpc.add_IdentityServicer_to_server(NoopIdentity(), server)
    csi_pb2_grpc.add_NodeServicer_to_server(NoopNode(), server)
    if server.add_insecure_port(f"unix://{endpoint}") == 0:
        raise SystemExit(f"noop_server: cannot listen on {endpoint}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    stop.wait()
    server.stop(grace=None).wait()


class AioIdentity(csi_pb2_grpc.IdentityServicer):
    async def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest,
                            context: grpc.aio.ServicerContext) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name="noop.bench.csi", vendor_version="0.0.0")

    async def Probe(self, request: csi_pb2.ProbeRequest,
                    context: grpc.aio.ServicerContext) -> csi_pb2.ProbeResponse:
        return csi_pb2.ProbeResponse()


class AioNode(csi_pb2_grpc.NodeServicer):
    async def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest,
                                context: grpc.aio.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        return csi_pb2.NodePublishVolumeResponse()

    async def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> csi_pb2.NodeUnpublishVolumeResponse:
        return csi_pb2.NodeUnpublishVolumeResponse()


async def serve_aio(endpoint: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    csi_pb2_grpc.add_IdentityServicer_to_server(AioIdentity(), server)
    csi_pb2_grpc.add_NodeServicer_to_server(AioNode(), server)
    if server.add_insecure_port(f"unix://{endpoint}") == 0:
        raise SystemExit(f"noop_server: cannot listen on {endpoint}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await server.start()
    await stop.wait()
    await server.stop(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noop_server", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="the Unix socket path to serve on")
    parser.add_argument("--workers", type=int, default=WORKERS, help="threads in the server's pool")
    parser.add_argument("--aio", action="store_true", help="serve from grpc.aio instead of a thread pool")
    args = parser.parse_args(argv)
    if args.aio:
        asyncio.run(serve_aio(args.endpoint))
    else:
        serve(args.endpoint, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
