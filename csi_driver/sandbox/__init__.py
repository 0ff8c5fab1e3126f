"""``datadog-csi-driver sandbox``: the driver's whole job on one machine, no cluster.

It starts a demo agent (DogStatsD and APM sockets in a temporary directory),
the real driver on a temporary CSI socket with a temporary kubelet root, and
then does what the kubelet does for a pod with one volume of each type:
creates the volume directory, calls NodePublishVolume, lets a "pod" process in
its own mount namespace send through the volume, and unpublishes. Everything
happens inside a private mount namespace, so nothing is left on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

SANDBOX_ENV = "DATADOG_CSI_SANDBOX_NS"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datadog-csi-driver sandbox",
        description="Run the driver against a temporary kubelet root and demo agent sockets, "
                    "publish one volume of each type, and show data flowing through them.")
    parser.add_argument("--serve", action="store_true",
                        help="keep the driver running after the demo (Ctrl-C to stop) so you can "
                             "call it yourself")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve /metrics, /healthz and /readyz on this port (default: a free one)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print("sandbox: bind mounts need root; run it as root (e.g. with sudo)", file=sys.stderr)
        return 1
    if os.environ.get(SANDBOX_ENV) != os.readlink("/proc/self/ns/mnt"):
        return _reexec_in_private_namespace(argv)
    return _run(args)


def _reexec_in_private_namespace(argv: list[str]) -> int:
    """Run again inside ``unshare --mount``: every mount dies with the sandbox.

    SIGINT and SIGTERM sent to this process are passed on to the sandbox, which
    cleans up (driver stopped, temporary directory removed) before this returns
    its exit status; a signal sent to the whole process group reaches both, and
    the sandbox ignores the second copy while it cleans up.
    """
    script = f'export {SANDBOX_ENV}="$(readlink /proc/self/ns/mnt)"; exec "$@"'
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
               sys.executable, "-m", "csi_driver", "sandbox", *argv]
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    return child.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(text: str = "") -> None:
    print(text, flush=True)


class _Stopped(BaseException):
    """SIGINT or SIGTERM: unwinds the sandbox like Ctrl-C, through its cleanup."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def _run(args: argparse.Namespace) -> int:
    from csi_driver import logs
    from csi_driver.sandbox.agent import DemoAgent

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    root = tempfile.mkdtemp(prefix="dd-csi-sandbox-")
    logs.setup("warning")  # the demo narrates; the driver only speaks up on problems
    agent: DemoAgent | None = None
    driver: Any = None
    try:
        agent = DemoAgent(os.path.join(root, "run", "datadog")).start()
        driver = _start_driver(root, agent, args.metrics_port or _free_port())
        failures = _demo(driver.config, agent)
        if args.serve:
            _serve(driver.config)
    except _Stopped as stopped:
        _say(f"\nstopped by {signal.Signals(stopped.signum).name}; cleaning up")
        failures, code = 0, 128 + stopped.signum
    else:
        code = 1 if failures else 0
    finally:
        # A second signal (one sent to the whole process group reaches this
        # process twice) must not interrupt the cleanup.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        if driver is not None:
            driver.stop(grace=5)
        if agent is not None:
            agent.stop()
        shutil.rmtree(root, ignore_errors=True)
    if code < 128:
        _say("\nall volumes published, used and unpublished" if not failures
             else f"\n{failures} volume type(s) failed")
    return code


def _start_driver(root: str, agent: Any, port: int) -> Any:
    from csi_driver.config import Config
    from csi_driver.server import Driver

    config = Config(
        csi_endpoint=f"unix://{root}/plugins/datadog.csi/csi.sock",
        apm_host_socket_path=agent.apm_path, dsd_host_socket_path=agent.dsd_path,
        storage_path=os.path.join(root, "storage"), kubelet_root_dir=os.path.join(root, "kubelet"),
        metrics_port=port, node_id=socket.gethostname())
    os.makedirs(config.pods_dir)
    os.makedirs(config.storage_path)  # the library cache's home, as the chart's hostPath provides
    driver = Driver(config)
    driver.start()
    _say(f"sandbox in {root} (private mount namespace; removed on exit)")
    _say(f"  demo agent  DogStatsD {agent.dsd_path}  APM {agent.apm_path}")
    _say(f"  driver      {config.csi_endpoint}   metrics http://127.0.0.1:{port}/metrics")
    return driver


def _demo(config: Any, agent: Any) -> int:
    """Publish, use and unpublish one volume of each type; the number that failed."""
    import grpc

    from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
    from csi_driver.volumes import sockets

    with grpc.insecure_channel(config.csi_endpoint) as channel:
        node = csi_pb2_grpc.NodeStub(channel)
        info = csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(csi_pb2.GetPluginInfoRequest())
        _say(f"  GetPluginInfo -> {info.name} {info.vendor_version}")
        pod_uid = str(uuid.uuid4())
        return sum(not _demo_volume(node, config, agent, pod_uid, volume_type)
                   for volume_type in sockets.TYPES)


def _serve(config: Any) -> None:
    """Keep serving, with the driver's one log line per call shown, until a signal."""
    import logging

    client = (f"{sys.executable} -m csi_driver.sandbox.client --endpoint {config.csi_endpoint} "
              f"--kubelet-root {config.kubelet_root_dir}")
    _say("\ndriver still serving; Ctrl-C (or SIGTERM) stops it and removes the sandbox.")
    _say("Call it from another shell, as the kubelet would:")
    _say(f"  {client} probe")
    _say(f"  {client} publish DSDSocketDirectory      # prints the pod UID and the target")
    _say(f"  {client} unpublish --pod <UID>")
    _say("Its JSON log line for each call follows.\n")
    logging.getLogger().setLevel(logging.INFO)
    while True:
        time.sleep(3600)


def _demo_volume(node: Any, config: Any, agent: Any, pod_uid: str, volume_type: str) -> bool:
    from csi_driver import mounts
    from csi_driver.sandbox import kubelet
    from csi_driver.sandbox.agent import DemoAgent
    from csi_driver.sandbox.pod import SOCKET_IN_VOLUME, send

    relative, transport = SOCKET_IN_VOLUME[volume_type]
    name = volume_type.lower()
    # The kubelet's part: the target's parent and its vol_data.json.
    target = kubelet.prepare_volume_dir(config.kubelet_root_dir, pod_uid, name)
    _say(f"\n{volume_type}")
    started = time.perf_counter()
    node.NodePublishVolume(kubelet.publish_request(config.kubelet_root_dir, pod_uid, name,
                                                   {"type": volume_type}))
    _say(f"  NodePublishVolume   {(time.perf_counter() - started) * 1000:.2f} ms")
    entry = mounts.entry_at(target)
    if entry is not None:
        _say(f"  mounted             {entry.root} -> .../{name}/mount ({','.join(entry.options)})")
    payload = f"hello from a pod through {volume_type}"
    result = send(transport, target, payload, relative)
    ok = result.returncode == 0
    if ok:
        try:
            got = DemoAgent.expect(agent.received(transport), timeout=5).decode()
            ok = got == payload
            _say(f"  agent received      {got!r}")
        except Exception:
            ok = False
    if not ok:
        _say(f"  pod could not reach the agent: {result.stderr.strip()}")
    started = time.perf_counter()
    node.NodeUnpublishVolume(kubelet.unpublish_request(config.kubelet_root_dir, pod_uid, name))
    gone = not os.path.lexists(target)
    _say(f"  NodeUnpublishVolume {(time.perf_counter() - started) * 1000:.2f} ms "
         f"(target {'removed' if gone else 'LEFT BEHIND'})")
    return ok and gone
