"""bench/run.sh --quick still runs end to end and prints its whole table.

Only that: the quick mode's counts are too small for its figures to mean
anything, so nothing here looks at a timing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from csi_driver.volumes import sockets

REPO = Path(__file__).resolve().parents[2]
SIZES = ("10", "1,000", "10,000")
TYPES = (*sockets.TYPES, "all types")
# (row label, once per mount-table size?)
ROWS = [
    ("csi_driver.mounts (open_tree/move_mount, umount2)", True),
    ("ctypes mount(2) MS_BIND + umount2(2)", True),
    ("mount(2) + umount2(2), source on the fillers' mount", True),
    ("pair by exec: mount --bind + umount", True),
    ("mount-point check: statx (ours)", True),
    ("mount-point check: mountinfo scan", True),
    *((volume_type, True) for volume_type in TYPES),
    ("idle, after start", False),
    ("publish/unpublish cycles", False),
    ("growth", False),
    ("0 filler mounts", False),
    ("10,000 filler mounts", False),
]
SECTIONS = ("[1] Floor", "[2] Reference approaches", "[3] Latency", "[4] Throughput",
            "[6] Driver resident memory", "[7] Cold start", "Targets and ratios")
TARGETS = (
    "publish+unpublish p50 over the floor",
    "pair p99 at 10,000 mounts over p99 at 10",
    "32 callers, pairs/s",
    "RSS idle",
    "RSS growth over",
    "cold start (median;",
)


def test_quick_benchmark_prints_every_row():
    env = {**os.environ, "CSI_BENCH_SKIP_SETUP": "1"}
    env.pop("CSI_BENCH_HOST_MOUNT_NS", None)  # let run.sh enter its own namespace
    done = subprocess.run([str(REPO / "bench" / "run.sh"), "--quick"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=REPO)
    sys.stderr.write(done.stderr)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for section in SECTIONS:
        assert section in out, f"section {section!r} missing:\n{out}"
    lines = out.splitlines()
    for label, per_size in ROWS:
        matching = [line for line in lines if label in line]
        if per_size:
            for size in SIZES:
                assert any(re.search(rf"\s{re.escape(size)}\s", line) for line in matching), \
                    f"row {label!r} at {size} mounts missing:\n{out}"
        else:
            assert matching, f"row {label!r} missing:\n{out}"
    throughput = [line for line in lines if re.match(r"\s+(10|1,000|10,000)\s+[\d,]+\s+[\d,]+\s+[\d,]+$", line)]
    assert len(throughput) == len(SIZES), f"throughput rows missing:\n{out}"
    for target in TARGETS:
        row = next((line for line in lines if target in line), None)
        assert row is not None and re.search(r"\b(PASS|MISS)$", row), \
            f"target {target!r} has no verdict:\n{out}"
