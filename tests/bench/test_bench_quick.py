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
    ("the same, CPU caches evicted before each pair", True),
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
            "[6] Driver resident memory", "[7] Cold start", "[8] Kubelet-faithful calls",
            "[9] Kubelet-faithful cold start", "[10] Kubelet-faithful memory", "[11] Library volumes",
            "[12] Kubelet-faithful cost per pair",
            "Targets and ratios")
# The kubelet-faithful section compares four servers at two mount-table sizes.
SERVERS = ("this driver", "Python no-op server (grpcio, sync)", "Python no-op server (grpcio, grpc.aio)",
           "Go no-op server (grpc-go)")
KF_SIZES = ("10", "10,000")
KF_COLD = (*SERVERS, 'python -c "import grpc"')
KF_MEMORY = ("this driver, idle after start", "this driver, after", "this driver, growth",
             *(f"{server}, idle after start" for server in SERVERS[1:]),
             'python -c "import grpc" + the CSI stubs, after the imports',
             'python -c "import grpc" + the CSI stubs + prometheus_client, after the imports')
TARGETS = (
    "kubelet-faithful pair p50 over the Python no-op's",
    "kubelet-faithful pair p50 over the Go no-op's",
    "kubelet-faithful 32 callers, pairs/s over the Python no-op's",
    "kubelet-faithful pair p50 at 10,000 mounts over p50 at 10",
    "kubelet-faithful pair p99 at 10,000 mounts over p99 at 10",
    "kubelet-faithful cold start (median",
    "kubelet-faithful RSS idle",
    "kubelet-faithful RSS growth over",
    "pair p99 at 10,000 mounts over p99 at 10",
    "RSS idle",
    "RSS growth over",
    "cold start (median;",
    "cached DatadogLibrary pair p50 over DSDSocketDirectory's",
)
# Shown for information only: no verdict.
INFORMATION = (
    "publish+unpublish p50 over the floor",
    "32 callers, pairs/s on one channel",
    'cold start over python -c "import grpc"',
    'RSS idle over python -c "import grpc" + the CSI stubs',
    "library pull MB/s over cat's of the same",
)
TIME = r"[\d.]+ (us|ms|s)"


def section(out: str, title: str) -> list[str]:
    """The rows of the section whose title starts with ``title`` (sections are separated by a blank line)."""
    for block in out.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith(title):
            return lines[3:]  # after the title, the header and the rule
    raise AssertionError(f"section {title!r} missing:\n{out}")


def test_quick_benchmark_prints_every_row():
    env = {**os.environ, "CSI_BENCH_SKIP_SETUP": "1"}
    env.pop("CSI_BENCH_HOST_MOUNT_NS", None)  # let run.sh enter its own namespace
    done = subprocess.run([str(REPO / "bench" / "run.sh"), "--quick"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=REPO)
    sys.stderr.write(done.stderr)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for title in SECTIONS:
        assert title in out, f"section {title!r} missing:\n{out}"
    lines = out.splitlines()
    for label, per_size in ROWS:
        matching = [line for line in lines if label in line]
        if per_size:
            for size in SIZES:
                assert any(re.search(rf"\s{re.escape(size)}\s", line) for line in matching), \
                    f"row {label!r} at {size} mounts missing:\n{out}"
        else:
            assert matching, f"row {label!r} missing:\n{out}"
    assert_kubelet_faithful_rows(out)
    assert_library_rows(out)
    throughput = [line for line in lines if re.match(r"\s+(10|1,000|10,000)\s+[\d,]+\s+[\d,]+\s+[\d,]+$", line)]
    assert len(throughput) == len(SIZES), f"throughput rows missing:\n{out}"
    targets = section(out, "Targets and ratios")
    for target in TARGETS:
        row = next((line for line in targets if line.strip().startswith(target)), None)
        assert row is not None and re.search(r"\b(PASS|MISS)$", row), \
            f"target {target!r} has no verdict:\n{out}"
    for label in INFORMATION:
        row = next((line for line in targets if label in line), None)
        assert row is not None and re.search(r"\dx?$", row) and not re.search(r"(PASS|MISS)$", row), \
            f"information row {label!r} missing or judged:\n{out}"


def assert_kubelet_faithful_rows(out: str) -> None:
    calls = section(out, "[8] Kubelet-faithful calls")
    for server in SERVERS:
        for size in KF_SIZES:
            # pair p50, p99, publish p50, unpublish p50, pairs/s, two ratios
            cells = rf"\s+{re.escape(size)}\s+{TIME}\s+{TIME}\s+{TIME}\s+{TIME}\s+[\d,]+\s+[\d.]+x\s+[\d.]+x$"
            assert any(line.strip().startswith(server) and re.search(cells, line) for line in calls), \
                f"kubelet-faithful row {server!r} at {size} mounts missing:\n{out}"
    cold = section(out, "[9] Kubelet-faithful cold start")
    for process in KF_COLD:
        assert any(line.strip().startswith(process) and re.search(rf"\s\d+\s+{TIME}\s+{TIME}\s+[\d.]+x$", line)
                   for line in cold), f"cold-start row {process!r} missing:\n{out}"
    cost = section(out, "[12] Kubelet-faithful cost per pair")
    for server in SERVERS:
        # pairs, CPU per pair, switches per pair, ratio, the caller's CPU per pair, CPUs busy
        assert any(line.strip().startswith(server)
                   and re.search(rf"\s[\d,]+\s+{TIME}\s+[\d.]+\s+[\d.]+x\s+{TIME}\s+[\d.]+$", line)
                   for line in cost), f"cost row {server!r} missing:\n{out}"
    memory = section(out, "[10] Kubelet-faithful memory")
    for label in KF_MEMORY:
        assert any(line.strip().startswith(label) and re.search(r"[\d.]+ MB", line) for line in memory), \
            f"memory row {label!r} missing:\n{out}"


def assert_library_rows(out: str) -> None:
    rows = section(out, "[11] Library volumes")
    for pct in ("p50", "p99"):
        cells = rf"\s{TIME}\s+DSDSocketDirectory {TIME}\s+[\d.]+x$"
        assert any(line.strip().startswith(f"cached DatadogLibrary publish+unpublish {pct}")
                   and re.search(cells, line) for line in rows), f"library {pct} row missing:\n{out}"
    pull = rf"\s[\d,]+ MB/s in {TIME}\s+cat [\d,]+ MB/s\s+[\d.]+x$"
    assert any(line.strip().startswith("pull of a ") and re.search(pull, line) for line in rows), \
        f"library pull row missing:\n{out}"
