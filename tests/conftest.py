"""Suite-wide guards and fixtures.

Every suite but ``tests/unit`` mounts for real. Those must run as root inside
a private mount namespace (``scripts/test.sh`` arranges both), so nothing they
mount can leak onto the machine. Without those the run stops with an error
instead of skipping: a suite that silently skips its mounts proves nothing.
``tests/unit`` replaces the mount calls with an in-memory table and runs
anywhere, in seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _private_mount_namespace() -> bool:
    """True when this process's mount namespace is not the machine's.

    The machine's namespace is read from PID 1 where permitted, else from
    CSI_TESTS_HOST_MOUNT_NS, which scripts/test.sh records before unsharing.
    """
    ours = os.readlink("/proc/self/ns/mnt")
    try:
        host = os.readlink("/proc/1/ns/mnt")
    except OSError:
        host = os.environ.get("CSI_TESTS_HOST_MOUNT_NS", "")
    return bool(host) and ours != host


UNIT = REPO / "tests" / "unit"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    mounting = [item for item in items if not item.path.is_relative_to(UNIT)]
    if not mounting or os.environ.get("CSI_TESTS_ALLOW_HOST_NAMESPACE") == "1":
        return
    if os.geteuid() != 0:
        raise pytest.UsageError(
            f"{mounting[0].nodeid} and {len(mounting) - 1} more tests do real bind mounts and need "
            "root; run them with scripts/test.sh as root (tests/unit alone runs without)")
    if not _private_mount_namespace():
        raise pytest.UsageError(
            "refusing to mount in the host's mount namespace; run the suite through "
            "scripts/test.sh, which starts it under 'unshare --mount --propagation private'")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    from support import report

    report.write_summary(terminalreporter, config)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def kubelet_root(tmp_path: Path) -> str:
    root = tmp_path / "kubelet"
    (root / "pods").mkdir(parents=True)
    return str(root)


@pytest.fixture
def agent(tmp_path: Path):
    from support.agent import DemoAgent

    demo = DemoAgent(str(tmp_path / "run" / "datadog")).start()
    yield demo
    demo.stop()


@pytest.fixture
def driver(tmp_path: Path, kubelet_root: str, agent):
    from support.driver import DriverProcess

    process = DriverProcess(workdir=str(tmp_path), kubelet_root=kubelet_root,
                            dsd_path=agent.dsd_path, apm_path=agent.apm_path).start()
    yield process
    process.stop()


@pytest.fixture
def metered_driver(tmp_path: Path, kubelet_root: str, agent):
    """The driver with its metrics and health server on a free port (``metrics_port``)."""
    from support.driver import DriverProcess, free_port

    process = DriverProcess(workdir=str(tmp_path), kubelet_root=kubelet_root,
                            dsd_path=agent.dsd_path, apm_path=agent.apm_path,
                            metrics_port=free_port()).start()
    yield process
    process.stop()
