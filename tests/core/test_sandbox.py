"""The README's first command: the sandbox demo runs end to end."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest


def test_sandbox_publishes_every_type_and_cleans_up():
    result = subprocess.run([sys.executable, "-m", "csi_driver", "sandbox"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for volume_type in ("DSDSocket", "DSDSocketDirectory", "APMSocket", "APMSocketDirectory"):
        assert f"agent received      'hello from a pod through {volume_type}'" in result.stdout
    assert result.stdout.count("(target removed)") == 4
    assert "all volumes published, used and unpublished" in result.stdout


def _lines(proc: subprocess.Popen) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _until(lines: queue.Queue[str], marker: str, seen: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(f"never saw {marker!r}; output so far:\n" + "\n".join(seen))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_shows_how_to_call_it_and_a_signal_to_its_pid_cleans_up(signum):
    """SIGINT or SIGTERM sent to the started process alone (not its group) stops
    the sandbox: no driver left serving, the temporary directory removed."""
    proc = subprocess.Popen([sys.executable, "-m", "csi_driver", "sandbox", "--serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen: list[str] = []
    try:
        lines = _lines(proc)
        _until(lines, "Its JSON log line for each call follows.", seen)
        root = next(line.split()[2] for line in seen if line.startswith("sandbox in "))
        probe = next(line.strip() for line in seen if line.strip().endswith(" probe"))
        publish = next(line.strip().split("  #")[0] for line in seen if " publish " in line)
        # The printed commands work as printed, from outside the sandbox.
        assert "ready=True" in subprocess.run(probe, shell=True, capture_output=True, text=True,
                                              timeout=30).stdout
        published = subprocess.run(publish, shell=True, capture_output=True, text=True, timeout=30)
        assert published.returncode == 0, published.stderr
        pod = published.stdout.strip().rsplit("(pod ", 1)[1].rstrip(")")
        _until(lines, '"method": "NodePublishVolume"', seen)  # the driver's call line is shown
        unpublish = publish.replace(" publish DSDSocketDirectory", f" unpublish --pod {pod}")
        assert subprocess.run(unpublish, shell=True, capture_output=True, text=True,
                              timeout=30).returncode == 0
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=60) == 128 + signum
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not os.path.exists(root), "the sandbox's temporary directory was left behind"
    # Nothing of the sandbox's session is left (it was started in a session of its own).
    leftovers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True,
                               text=True).stdout.split()
    assert not leftovers, f"sandbox processes left running: {leftovers}"
