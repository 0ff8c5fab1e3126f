"""Call a running driver the way the kubelet does, from a shell: for trying the
sandbox's driver (``datadog-csi-driver sandbox --serve`` prints these commands).

    python -m csi_driver.sandbox.client --endpoint unix:///path/csi.sock probe
    python -m csi_driver.sandbox.client --endpoint ... --kubelet-root DIR publish DSDSocket [--pod UID]
    python -m csi_driver.sandbox.client --endpoint ... --kubelet-root DIR unpublish --pod UID
"""

from __future__ import annotations

import argparse
import sys
import uuid

import grpc

from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
from csi_driver.sandbox import kubelet

VOLUME = "datadog"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csi_driver.sandbox.client",
                                     description="Call a CSI driver as the kubelet does.")
    parser.add_argument("--endpoint", required=True, help="the driver's socket, unix:///...")
    parser.add_argument("--kubelet-root", help="the driver's --kubelet-root-dir (publish, unpublish)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("probe", help="Probe and GetPluginInfo")
    publish = commands.add_parser("publish", help="lay out a pod volume and publish it")
    publish.add_argument("type", help="volume type, e.g. DSDSocket or APMSocketDirectory")
    publish.add_argument("--pod", default="", help="pod UID (default: a new one)")
    unpublish = commands.add_parser("unpublish", help="unpublish a pod's volume and remove its directory")
    unpublish.add_argument("--pod", required=True, help="pod UID that publish printed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "probe" and not args.kubelet_root:
        print("--kubelet-root is required to publish or unpublish", file=sys.stderr)
        return 2
    with grpc.insecure_channel(args.endpoint) as channel:
        try:
            return _call(args, channel)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1


def _call(args: argparse.Namespace, channel: grpc.Channel) -> int:
    node = csi_pb2_grpc.NodeStub(channel)
    if args.command == "probe":
        identity = csi_pb2_grpc.IdentityStub(channel)
        info = identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=5)
        ready = identity.Probe(csi_pb2.ProbeRequest(), timeout=5).ready.value
        print(f"{info.name} {info.vendor_version}: ready={ready}")
    elif args.command == "publish":
        pod = args.pod or str(uuid.uuid4())
        target = kubelet.prepare_volume_dir(args.kubelet_root, pod, VOLUME)
        node.NodePublishVolume(kubelet.publish_request(args.kubelet_root, pod, VOLUME,
                                                       {"type": args.type}), timeout=10)
        print(f"published {args.type} at {target} (pod {pod})")
    else:
        node.NodeUnpublishVolume(kubelet.unpublish_request(args.kubelet_root, args.pod, VOLUME),
                                 timeout=10)
        kubelet.remove_volume_dir(args.kubelet_root, args.pod, VOLUME)
        print(f"unpublished pod {args.pod}'s volume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
