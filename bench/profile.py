"""``bench/profile.sh [OUT.svg]``: a flame graph of the driver under kubelet-faithful load.

The driver runs as in the benchmark (its own process in a private mount
namespace, the agent's directory a mount of its own); the Go kubelet client
publishes and unpublishes DSDSocketDirectory volumes with a new connection per
call from ``--callers`` goroutines while py-spy samples the driver (every
thread, C frames included) for ``--seconds``. Where the time goes is read in
bench/README.md ("Where the time goes").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bench import driver_calls, kubelet_faithful  # noqa: E402
from bench.__main__ import in_private_namespace, mount_tmpfs  # noqa: E402
from support.agent import DemoAgent  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/profile.sh", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(REPO / "bench" / "profiles" / "kubelet-faithful.svg"))
    parser.add_argument("--callers", type=int, default=kubelet_faithful.CALLERS)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not in_private_namespace():
        print("profile: run it through bench/profile.sh (root, private mount namespace)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="csi-profile-")
    mount_tmpfs(work)
    agent_dir = os.path.join(work, "run", "datadog")
    os.makedirs(agent_dir)
    mount_tmpfs(agent_dir)
    agent = DemoAgent(agent_dir).start()
    kube = driver_calls.Kubelet(os.path.join(work, "kubelet"))
    driver, _ = driver_calls.start_driver(os.path.join(work, "driver"), kube.root, agent.dsd_path,
                                          agent.apm_path)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            kubelet_faithful.pairs(driver.socket_path, kube.root, 500, callers=args.callers)

    caller = threading.Thread(target=load, daemon=True)
    caller.start()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                        str(driver.process.pid), "--duration", str(args.seconds), "--rate",
                        str(args.rate), "--native", "--format", "flamegraph", "--output", args.out],
                       check=True)
    finally:
        stop.set()
        caller.join(120)
        driver.stop()
        agent.stop()
    print(f"flame graph: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
