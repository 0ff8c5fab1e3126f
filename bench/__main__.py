"""``python -m bench [--quick]``: run every measurement, print one table.

Each figure is measured in the same run as the reference it is compared
with, so on a noisy machine the ratios are the numbers to read.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/support: DemoAgent, DriverProcess

from bench import driver_calls, floor, kubelet_faithful, library
from bench.driver_calls import TYPES, Kubelet
from bench.mount_table import Filler
from bench.stats import Section, fmt_count, fmt_mb, fmt_ratio, fmt_seconds, percentile
from support.agent import DemoAgent
from support.driver import DriverProcess

SIZES = (10, 1_000, 10_000)  # unrelated mounts added to the namespace's table
CALLERS = (1, 8, 32)


@dataclass(frozen=True)
class Plan:
    floor_pairs: int  # in-process bind+unmount pairs, per mount-table size
    exec_pairs: int  # mount(8)+umount(8) pairs, per size
    statx_checks: int
    mountinfo_checks: int
    latency_per_type: int  # sequential publish+unpublish pairs per volume type, per size
    throughput_pairs: int  # pairs per caller count, per size
    warmup_pairs: int
    memory_cycles: int
    cold_starts: int
    kf_serial: int  # kubelet-faithful pairs, one caller, per server, per size in kubelet_faithful.SIZES
    kf_concurrent: int  # kubelet-faithful pairs at 32 callers, per server, per size
    kf_memory_pairs: int  # kubelet-faithful pairs the driver answers before its RSS is read again
    library_pairs: int  # cached DatadogLibrary pairs, and as many socket-volume pairs beside them
    library_download_mb: int  # size of the library pulled from the loopback registry
    rounds: int  # passes over the mount-table sizes; each count above is split over them


FULL = Plan(floor_pairs=4000, exec_pairs=60, statx_checks=8000, mountinfo_checks=40,
            latency_per_type=500, throughput_pairs=600, warmup_pairs=200,
            memory_cycles=3000, cold_starts=5, kf_serial=1000, kf_concurrent=1000,
            kf_memory_pairs=10_000, library_pairs=300, library_download_mb=50, rounds=4)
QUICK = Plan(floor_pairs=50, exec_pairs=3, statx_checks=50, mountinfo_checks=3,
             latency_per_type=10, throughput_pairs=64, warmup_pairs=20,
             memory_cycles=200, cold_starts=1, kf_serial=10, kf_concurrent=64,
             kf_memory_pairs=200, library_pairs=10, library_download_mb=5, rounds=1)

# Targets: what each figure must reach (the kubelet-faithful ones are in
# bench/kubelet_faithful.py). The floor ratio and the pairs/s of [4] are shown
# for information: they measure the gRPC transport and the machine more than the driver.
P99_GROWTH_MAX = 1.5
RSS_IDLE_MAX_KIB = 60 * 1024
RSS_GROWTH_MAX_KIB = 5 * 1024
COLD_START_MAX = 1.5

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"# [{time.monotonic() - _STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


def in_private_namespace() -> bool:
    host = os.environ.get("CSI_BENCH_HOST_MOUNT_NS", "")
    return bool(host) and os.readlink("/proc/self/ns/mnt") != host


def mount_tmpfs(path: str) -> None:
    if _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", 0, b"mode=0755") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting a tmpfs on {path}: {os.strerror(err)}")


def p50(samples: list[float]) -> float:
    return percentile(samples, 50)


def p99(samples: list[float]) -> float:
    return percentile(samples, 99)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run(plan: Plan, quick: bool) -> int:
    work = tempfile.mkdtemp(prefix="csi-bench-")
    mount_tmpfs(work)  # everything below lives in memory and in this namespace only
    try:
        return measure(plan, quick, work)
    finally:
        _libc.umount2(os.fsencode(work), floor.mounts.MNT_DETACH)
        os.rmdir(work)


def measure(plan: Plan, quick: bool, work: str) -> int:
    # The agent's socket directory is a mount of its own, as the hostPath volume
    # holding it is in the driver's container. The kernel's bind mount walks every
    # child of the *source's* mount, so a source sharing the fillers' mount would
    # grow with them; the "crowded source" floor row shows that cost.
    agent_dir = os.path.join(work, "run", "datadog")
    os.makedirs(agent_dir)
    mount_tmpfs(agent_dir)
    agent = DemoAgent(agent_dir).start()
    kube = Kubelet(os.path.join(work, "kubelet"))
    filler = Filler(os.path.join(work, "filler"))  # same mount as the kubelet tree
    os.makedirs(os.path.join(work, "floor"))
    floor_target = os.path.join(work, "floor", "target")
    open(floor_target, "w").close()
    crowded_source = os.path.join(work, "floor", "source")
    open(crowded_source, "w").close()
    baseline_mounts = floor.mount_table_size()

    def new_driver(name: str):
        return driver_calls.start_driver(os.path.join(work, name), kube.root, agent.dsd_path,
                                         agent.apm_path)

    # 7. cold start: process start to the first successful Probe.
    progress("cold start")
    starts = []
    for i in range(plan.cold_starts):
        driver, seconds = new_driver(f"cold{i}")
        driver.stop()
        starts.append(seconds)

    progress("kubelet-faithful cold start, with the no-op servers and a bare import grpc")
    kf = kubelet_faithful.Results()
    kubelet_faithful.measure_cold_starts(
        kf, plan.cold_starts, os.path.join(work, "kf-cold"),
        lambda workdir: driver_calls.driver_command(workdir, kube.root, agent.dsd_path, agent.apm_path))

    # 6. resident memory, idle and after many publish/unpublish cycles.
    progress(f"memory over {plan.memory_cycles:,} cycles")
    driver, _ = new_driver("memory")
    time.sleep(0.5)
    rss_idle = driver_calls.rss_kib(driver.process.pid)
    driver_calls.cycles(driver, kube, plan.memory_cycles)
    time.sleep(0.5)
    rss_after = driver_calls.rss_kib(driver.process.pid)
    driver.stop()

    # 11. library volumes, before any filler mount (the library rows compare with a
    # socket volume measured beside them, not with the other sections).
    progress(f"library volumes: {plan.library_pairs:,} cached pairs, a {plan.library_download_mb} MB pull")
    os.makedirs(os.path.join(work, "library"))
    lib = library.measure(os.path.join(work, "library"), kube.root, agent.dsd_path, agent.apm_path,
                          plan.library_pairs, plan.library_download_mb)

    # 1-5, at each mount-table size, against one driver process that shares
    # this namespace (so it sees every filler mount). The sizes are visited in
    # several rounds, up and down, so that a noisy spell on the machine falls on
    # all of them rather than on whichever came first; samples are pooled.
    driver, _ = new_driver("main")
    driver_calls.cycles(driver, kube, plan.warmup_pairs)
    kf_servers = KubeletFaithfulServers(work, new_driver, kf)
    results = {size: {"floor_fd": [], "floor_plain": [], "floor_crowded": [], "floor_crowded_cold": [], "exec": [],
                      "statx": [], "mountinfo": [], "empty": [],
                      "latency": driver_calls.Latencies.empty(),
                      "throughput": {c: [] for c in CALLERS}} for size in SIZES}

    def share(count: int) -> int:
        return max(1, count // plan.rounds)

    for round_ in range(plan.rounds):
        for size in (SIZES if round_ % 2 == 0 else SIZES[::-1]):
            filler.resize(size)
            progress(f"round {round_ + 1}/{plan.rounds}: {size:,} filler mounts "
                     f"({floor.mount_table_size():,} in the table)")
            r = results[size]
            r["floor_fd"] += floor.pair_driver_mounts(agent.dsd_path, floor_target,
                                                      share(plan.floor_pairs))
            r["floor_plain"] += floor.pair_plain_syscalls(agent.dsd_path, floor_target,
                                                          share(plan.floor_pairs))
            r["floor_crowded"] += floor.pair_plain_syscalls(crowded_source, floor_target,
                                                            share(plan.floor_pairs))
            r["floor_crowded_cold"] += floor.pair_plain_syscalls(
                crowded_source, floor_target, max(1, share(plan.floor_pairs) // 20), cold_caches=True)
            r["exec"] += floor.pair_exec(agent.dsd_path, floor_target, share(plan.exec_pairs))
            r["statx"] += floor.check_statx(filler.last, share(plan.statx_checks))
            r["mountinfo"] += floor.check_mountinfo(filler.last, share(plan.mountinfo_checks))
            r["empty"] += driver_calls.empty_pairs(driver, share(plan.latency_per_type))
            r["latency"].extend(driver_calls.latency(driver, kube,
                                                     share(plan.latency_per_type)))
            for c in CALLERS:
                pairs = share(plan.throughput_pairs)
                r["throughput"][c].append((pairs, driver_calls.throughput(driver, kube, c, pairs)))
            if size in kubelet_faithful.SIZES:
                kubelet_faithful.measure_round(kf, kf_servers.endpoints, kube.root, size, round_,
                                               share(plan.kf_serial), share(plan.kf_concurrent),
                                               kf_servers.pids)
    for r in results.values():  # pairs/s over all rounds: total pairs over total time
        r["throughput"] = {c: sum(n for n, _ in runs) / sum(n / rate for n, rate in runs)
                           for c, runs in r["throughput"].items()}
    driver.stop()
    progress(f"kubelet-faithful memory: up to {plan.kf_memory_pairs:,} pairs")
    kf_servers.finish(plan.kf_memory_pairs, kube.root)

    # 7 again, on the full node: start-up reads the mount table once to adopt
    # earlier mounts, so this shows what that costs at 10,000 mounts.
    filler.resize(SIZES[-1])  # the rounds may have ended on another size
    progress(f"cold start at {SIZES[-1]:,} filler mounts")
    starts_full = []
    for i in range(plan.cold_starts):
        driver, seconds = new_driver(f"cold-full{i}")
        driver.stop()
        starts_full.append(seconds)
    agent.stop()

    print(report(plan, quick, baseline_mounts, results, {0: starts, SIZES[-1]: starts_full},
                 rss_idle, rss_after, kf, lib))
    return 0


class KubeletFaithfulServers:
    """The servers kubelet-faithful calls go to: a driver of their own (its memory is read
    before and after) and the two no-op servers, started once for all rounds."""

    def __init__(self, work: str, new_driver: Callable[[str], tuple[DriverProcess, float]],
                 kf: kubelet_faithful.Results) -> None:
        progress("kubelet-faithful servers: a driver, the Python (sync and aio) and Go no-op servers")
        self.kf = kf
        self.driver, _ = new_driver("kubelet-faithful")
        self.noops: dict[str, kubelet_faithful.NoopServer] = {}
        atexit.register(self.stop)  # a run that fails half-way leaves no server behind
        for i, server in enumerate(kubelet_faithful.NOOPS):
            self.noops[server] = kubelet_faithful.NoopServer(server, os.path.join(work, f"noop{i}"))
        self.pids = {kubelet_faithful.DRIVER: self.driver.process.pid,
                     **{server: noop.pid for server, noop in self.noops.items()}}
        self.endpoints = {kubelet_faithful.DRIVER: self.driver.socket_path,
                          **{server: noop.endpoint for server, noop in self.noops.items()}}
        time.sleep(0.5)
        kf.rss_idle[kubelet_faithful.DRIVER] = driver_calls.rss_kib(self.driver.process.pid)
        for server, noop in self.noops.items():
            kf.rss_idle[server] = driver_calls.rss_kib(noop.pid)

    def finish(self, memory_pairs: int, kubelet_root: str) -> None:
        """Bring the driver's pairs up to ``memory_pairs``, read its memory, stop everything."""
        kubelet_faithful.top_up(self.kf, self.driver.socket_path, kubelet_root, memory_pairs)
        time.sleep(0.5)
        self.kf.rss_after = driver_calls.rss_kib(self.driver.process.pid)
        self.stop()

    def stop(self) -> None:
        self.driver.stop()
        for noop in self.noops.values():
            noop.stop()


def _floor_sections(results: dict) -> tuple[Section, Section]:
    s1 = Section("[1] Floor: bind mount + unmount pair, in process",
                 ("pair", "filler mounts", "p50", "p99"))
    for size, r in results.items():
        s1.add("csi_driver.mounts (open_tree/move_mount, umount2)", fmt_count(size),
               fmt_seconds(p50(r["floor_fd"])), fmt_seconds(p99(r["floor_fd"])))
    for size, r in results.items():
        s1.add("ctypes mount(2) MS_BIND + umount2(2)", fmt_count(size),
               fmt_seconds(p50(r["floor_plain"])), fmt_seconds(p99(r["floor_plain"])))

    for size, r in results.items():
        s1.add("mount(2) + umount2(2), source on the fillers' mount", fmt_count(size),
               fmt_seconds(p50(r["floor_crowded"])), fmt_seconds(p99(r["floor_crowded"])))
    for size, r in results.items():
        s1.add("the same, CPU caches evicted before each pair", fmt_count(size),
               fmt_seconds(p50(r["floor_crowded_cold"])), fmt_seconds(p99(r["floor_crowded_cold"])))

    s2 = Section("[2] Reference approaches",
                 ("operation", "filler mounts", "p50", "p99", "p50 vs ours"))
    for size, r in results.items():
        s2.add("pair by exec: mount --bind + umount", fmt_count(size), fmt_seconds(p50(r["exec"])),
               fmt_seconds(p99(r["exec"])), fmt_ratio(p50(r["exec"]) / p50(r["floor_fd"])))
    for size, r in results.items():
        s2.add("mount-point check: statx (ours)", fmt_count(size), fmt_seconds(p50(r["statx"])),
               fmt_seconds(p99(r["statx"])), "1.00x")
    for size, r in results.items():
        s2.add("mount-point check: mountinfo scan", fmt_count(size),
               fmt_seconds(p50(r["mountinfo"])), fmt_seconds(p99(r["mountinfo"])),
               fmt_ratio(p50(r["mountinfo"]) / p50(r["statx"])))
    return s1, s2


def _latency_section(results: dict) -> Section:
    s3 = Section(
        "[3] Latency over the driver's Unix socket, one caller (real driver process)",
        ("volume type", "filler mounts", "publish p50", "p99", "unpublish p50", "p99",
         "pair p50", "p99", "pair p50 vs floor"))
    for size, r in results.items():
        s3.add("2 empty calls (NodeGetInfo)", fmt_count(size), "", "", "", "",
               fmt_seconds(p50(r["empty"])), fmt_seconds(p99(r["empty"])),
               fmt_ratio(p50(r["empty"]) / p50(r["floor_fd"])))
        lat = r["latency"]
        for label, keys in [(t, [t]) for t in TYPES] + [("all types", list(TYPES))]:
            pub = [x for k in keys for x in lat.publish[k]]
            unpub = [x for k in keys for x in lat.unpublish[k]]
            pair = [x for k in keys for x in lat.pair[k]]
            s3.add(label, fmt_count(size), fmt_seconds(p50(pub)), fmt_seconds(p99(pub)),
                   fmt_seconds(p50(unpub)), fmt_seconds(p99(unpub)), fmt_seconds(p50(pair)),
                   fmt_seconds(p99(pair)), fmt_ratio(p50(pair) / p50(r["floor_fd"])))
    return s3


def report(plan: Plan, quick: bool, baseline_mounts: int, results: dict,
           starts: dict[int, list[float]], rss_idle: dict[str, int], rss_after: dict[str, int],
           kf: kubelet_faithful.Results, lib: library.Results) -> str:
    out = [
        f"Datadog CSI node driver benchmark ({'quick: counts too small to judge' if quick else 'full'})",
        f"Linux {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{baseline_mounts} mounts in the table before the filler mounts",
    ]

    s1, s2 = _floor_sections(results)
    s3 = _latency_section(results)

    s4 = Section("[4] Throughput: publish+unpublish pairs per second; callers are asyncio tasks "
                 "sharing one channel",
                 ("filler mounts", *(f"{c} caller{'s' if c > 1 else ''}" for c in CALLERS)))
    for size, r in results.items():
        s4.add(fmt_count(size), *(fmt_count(r["throughput"][c]) for c in CALLERS))

    s6 = Section("[6] Driver resident memory (VmRSS)", ("state", "VmRSS", "peak (VmHWM)"))
    s6.add("idle, after start", fmt_mb(rss_idle["VmRSS"]), fmt_mb(rss_idle["VmHWM"]))
    s6.add(f"after {plan.memory_cycles:,} publish/unpublish cycles", fmt_mb(rss_after["VmRSS"]),
           fmt_mb(rss_after["VmHWM"]))
    growth = rss_after["VmRSS"] - rss_idle["VmRSS"]
    s6.add("growth", fmt_mb(growth), "")

    s7 = Section("[7] Cold start: process start to the first successful Probe",
                 ("mount table", "starts", "median", "max"))
    for size, times in starts.items():
        s7.add(f"{fmt_count(size)} filler mounts", str(len(times)), fmt_seconds(statistics.median(times)),
               fmt_seconds(max(times)))
    cold = max(statistics.median(times) for times in starts.values())

    small, large = results[SIZES[0]], results[SIZES[-1]]

    def all_pairs(r: dict) -> list[float]:
        return [x for t in TYPES for x in r["latency"].pair[t]]

    floor_ratio = p50(all_pairs(small)) / p50(small["floor_fd"])
    p99_growth = p99(all_pairs(large)) / p99(all_pairs(small))
    pub_growth = p99([x for t in TYPES for x in large["latency"].publish[t]]) / \
        p99([x for t in TYPES for x in small["latency"].publish[t]])
    unpub_growth = p99([x for t in TYPES for x in large["latency"].unpublish[t]]) / \
        p99([x for t in TYPES for x in small["latency"].unpublish[t]])
    min_32 = min(r["throughput"][32] for r in results.values())

    st = Section("Targets and ratios", ("ratio", "value", "target", ""))
    kubelet_faithful.add_targets(st, kf)
    library.add_targets(st, lib)
    st.add(f"publish+unpublish p50 over the floor ({SIZES[0]} mounts)", fmt_ratio(floor_ratio), "", "")
    st.add(f"pair p99 at {SIZES[-1]:,} mounts over p99 at {SIZES[0]}", fmt_ratio(p99_growth),
           f"<= {P99_GROWTH_MAX:g}x", verdict(p99_growth <= P99_GROWTH_MAX))
    st.add(f"  reference: floor p99 at {SIZES[-1]:,} mounts over p99 at {SIZES[0]}",
           fmt_ratio(p99(large["floor_fd"]) / p99(small["floor_fd"])), "", "")
    st.add(f"publish p99 at {SIZES[-1]:,} mounts over p99 at {SIZES[0]}", fmt_ratio(pub_growth),
           "", "")
    st.add(f"unpublish p99 at {SIZES[-1]:,} mounts over p99 at {SIZES[0]}", fmt_ratio(unpub_growth),
           "", "")
    st.add("32 callers, pairs/s on one channel (lowest over mount-table sizes)", fmt_count(min_32), "", "")
    st.add("32 callers over 1 caller, pairs/s (10 mounts)",
           fmt_ratio(small["throughput"][32] / small["throughput"][1]), "", "")
    st.add("RSS idle", fmt_mb(rss_idle["VmRSS"]), f"<= {fmt_mb(RSS_IDLE_MAX_KIB)}",
           verdict(rss_idle["VmRSS"] <= RSS_IDLE_MAX_KIB))
    st.add(f"RSS growth over {plan.memory_cycles:,} cycles", fmt_mb(growth),
           f"< {fmt_mb(RSS_GROWTH_MAX_KIB)}", verdict(growth < RSS_GROWTH_MAX_KIB))
    st.add(f"cold start (median; worse of 0 and {SIZES[-1]:,} mounts)", fmt_seconds(cold),
           f"< {COLD_START_MAX:g} s",
           verdict(cold < COLD_START_MAX))
    st.add(f"exec pair over syscall pair ({SIZES[0]} mounts)",
           fmt_ratio(p50(small["exec"]) / p50(small["floor_fd"])), "", "")
    st.add(f"mountinfo scan over statx ({SIZES[-1]:,} mounts)",
           fmt_ratio(p50(large["mountinfo"]) / p50(large["statx"])), "", "")

    sections = [s1, s2, s3, s4, s6, s7, kubelet_faithful.calls_section(kf),
                kubelet_faithful.cold_section(kf), kubelet_faithful.memory_section(kf),
                library.library_section(lib), kubelet_faithful.cost_section(kf), st]
    return "\n".join(out) + "\n\n" + "\n\n".join(s.render() for s in sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small counts: proves the benchmark works, judges nothing")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not in_private_namespace():
        print("bench: run it through bench/run.sh (root, private mount namespace)", file=sys.stderr)
        return 1
    return run(QUICK if args.quick else FULL, args.quick)


if __name__ == "__main__":
    sys.exit(main())
