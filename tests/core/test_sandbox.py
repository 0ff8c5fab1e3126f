"""The README's first command: the sandbox demo runs end to end."""

from __future__ import annotations

import subprocess
import sys


def test_sandbox_publishes_every_type_and_cleans_up():
    result = subprocess.run([sys.executable, "-m", "csi_driver", "sandbox"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for volume_type in ("DSDSocket", "DSDSocketDirectory", "APMSocket", "APMSocketDirectory"):
        assert f"agent received      'hello from a pod through {volume_type}'" in result.stdout
    assert result.stdout.count("(target removed)") == 4
    assert "all volumes published, used and unpublished" in result.stdout
