"""The driver called as the kubelet calls it, beside two no-op servers.

The kubelet keeps no channel to a CSI plugin: for every call it dials the
plugin's socket, makes the one call and closes the connection. The Go program
in ``bench/kubelet-client`` (built by ``scripts/build-kubelet-client.sh``;
``bench/run.sh`` passes its path in ``CSI_BENCH_KUBELET_CLIENT``) does the same
with grpc-go and the CSI spec's Go stubs, and also serves a no-op plugin. This
module runs it against three servers in the same namespace:

- this driver;
- ``bench.noop_server``: grpcio, synchronous, every answer empty (the Python floor);
- the same on ``grpc.aio``: whether grpcio's other server model would be faster;
- the Go program's ``serve-noop`` (the grpc-go floor).

It also times cold starts with the Go client's ``probe-wait`` and reads the
driver's memory before and after many such calls.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.stats import Section, fmt_count, fmt_mb, fmt_ratio, fmt_seconds, percentile

CLIENT_ENV = "CSI_BENCH_KUBELET_CLIENT"
SIZES = (10, 10_000)  # filler mounts at which the servers are compared
CALLERS = 32
VOLUME_TYPE = "DSDSocketDirectory"
WARMUP = 3  # untimed pairs at the start of every client run (its first dial is slower)
DRIVER, PYTHON_NOOP, GO_NOOP = "this driver", "Python no-op server (grpcio, sync)", "Go no-op server (grpc-go)"
PYTHON_AIO_NOOP = "Python no-op server (grpcio, grpc.aio)"
NOOPS = (PYTHON_NOOP, PYTHON_AIO_NOOP, GO_NOOP)
SERVERS = (DRIVER, *NOOPS)


class KubeletClientFailed(RuntimeError):
    pass


def client_path() -> str:
    path = os.environ.get(CLIENT_ENV, "")
    if not path or not os.access(path, os.X_OK):
        raise KubeletClientFailed(
            f"{CLIENT_ENV} does not name the kubelet-client binary ({path!r}); run the benchmark "
            "through bench/run.sh, which builds it with scripts/build-kubelet-client.sh")
    return path


def _run(args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run the client; any failure it reports (exit status, failed calls) raises."""
    done = subprocess.run([client_path(), *args], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise KubeletClientFailed(f"kubelet-client {args[0]} exited with {done.returncode}:\n"
                                  f"{done.stderr.strip()}\n{done.stdout.strip()}")
    report = json.loads(done.stdout)
    if report.get("failures"):
        raise KubeletClientFailed(f"kubelet-client {args[0]}: {report['failures']} calls failed: "
                                  f"{report.get('failure_sample')}")
    return report


@dataclass
class Run:
    pairs: int  # timed and warm-up pairs the server answered
    pair: list[float]
    publish: list[float]
    unpublish: list[float]
    pairs_per_second: float


def pairs(endpoint: str, kubelet_root: str, count: int, callers: int = 1, warmup: int = WARMUP) -> Run:
    """``count`` publish+unpublish pairs, a new connection per call, ``callers`` at once."""
    report = _run(["client", "-endpoint", endpoint, "-kubelet-root", kubelet_root, "-pairs", str(count),
                   "-callers", str(callers), "-warmup", str(warmup), "-type", VOLUME_TYPE, "-samples"])
    return Run(count + warmup, report["pair_seconds"], report["publish_seconds"],
               report["unpublish_seconds"], report["pairs_per_second"])


def cold_start(command: list[str], endpoint: str, log_path: str, env: dict[str, str] | None = None
               ) -> float:
    """Seconds from starting ``command`` to its first good Probe; the process is then stopped."""
    report = _run(["probe-wait", "-endpoint", endpoint, "-log", log_path, "--", *command], env=env)
    if report.get("exit_code") != 0:
        with open(log_path, errors="replace") as log:
            raise KubeletClientFailed(f"{command[0]} exited with {report.get('exit_code')} after SIGTERM:\n"
                                      f"{log.read()}")
    return float(report["ready_seconds"])


def import_grpc_seconds() -> float:
    """A Python process that only imports grpc, start to exit: what any grpcio server pays first."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import grpc"], check=True)
    return time.perf_counter() - started


IMPORT_FLOOR = 'python -c "import grpc" + the CSI stubs'
# The runtime dependencies every driver of this project imports before serving
# (grpcio for CSI, prometheus_client for /metrics): the floor the idle target
# sits against.
DEPS_FLOOR = f"{IMPORT_FLOOR} + prometheus_client"
_IMPORT_FLOOR_CODE = """import grpc
from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
{more}
for line in open("/proc/self/status"):
    if line.startswith(("VmRSS:", "VmHWM:")):
        print(line.split()[0], line.split()[1])
"""


def import_floor_rss_kib(more: str = "") -> dict[str, int]:
    """VmRSS of a process that has only imported grpc and the CSI stubs (and
    ``more``): what any grpcio CSI server holds before it serves anything."""
    done = subprocess.run([sys.executable, "-c", _IMPORT_FLOOR_CODE.format(more=more)], check=True,
                          capture_output=True, text=True)
    return {key.rstrip(":"): int(value) for key, value in
            (line.split() for line in done.stdout.splitlines())}


def noop_command(server: str, endpoint: str) -> list[str]:
    if server == PYTHON_NOOP:
        return [sys.executable, "-m", "bench.noop_server", "--endpoint", endpoint]
    if server == PYTHON_AIO_NOOP:
        return [sys.executable, "-m", "bench.noop_server", "--aio", "--endpoint", endpoint]
    return [client_path(), "serve-noop", "-endpoint", endpoint]


class NoopServer:
    """One of the no-op servers, running in the background until ``stop``."""

    def __init__(self, server: str, workdir: str) -> None:
        os.makedirs(workdir)
        self.endpoint = os.path.join(workdir, "csi.sock")
        self.log_path = os.path.join(workdir, "server.log")
        with open(self.log_path, "wb") as log:
            started = time.time_ns()
            self.process = subprocess.Popen(noop_command(server, self.endpoint), stdout=log,
                                            stderr=subprocess.STDOUT)
        try:
            _run(["probe-wait", "-endpoint", self.endpoint, "-since-unix-nano", str(started)])
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Results:
    """Samples pooled over the rounds, by server and then by filler-mount count."""

    serial: dict[str, dict[int, Run]] = field(default_factory=dict)
    rates: dict[str, dict[int, list[tuple[int, float]]]] = field(default_factory=dict)
    cold: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SERVERS})
    import_grpc: list[float] = field(default_factory=list)
    rss_idle: dict[str, dict[str, int]] = field(default_factory=dict)  # by server
    rss_after: dict[str, int] = field(default_factory=dict)  # the driver's
    import_floor_rss: dict[str, int] = field(default_factory=dict)
    deps_floor_rss: dict[str, int] = field(default_factory=dict)
    # Per server, over its 32-caller runs: pairs, CPU seconds, voluntary context
    # switches, the caller's CPU seconds, wall-clock seconds.
    cost: dict[str, list[float]] = field(default_factory=dict)
    driver_pairs: int = 0  # pairs the measured driver answered, warm-ups included

    def add_serial(self, server: str, size: int, run: Run) -> None:
        pooled = self.serial.setdefault(server, {}).setdefault(size, Run(0, [], [], [], 0.0))
        pooled.pairs += run.pairs
        pooled.pair += run.pair
        pooled.publish += run.publish
        pooled.unpublish += run.unpublish

    def add_rate(self, server: str, size: int, run: Run) -> None:
        self.rates.setdefault(server, {}).setdefault(size, []).append((len(run.pair), run.pairs_per_second))

    def p50(self, server: str, size: int) -> float:
        return percentile(self.serial[server][size].pair, 50)

    def p99(self, server: str, size: int) -> float:
        return percentile(self.serial[server][size].pair, 99)

    def rate(self, server: str, size: int) -> float:
        """Pairs/s over all rounds: total pairs over total time."""
        runs = self.rates[server][size]
        return sum(n for n, _ in runs) / sum(n / rate for n, rate in runs)

    def cold_median(self, server: str) -> float:
        return statistics.median(self.cold[server])


def process_cost(pid: int) -> tuple[float, int]:
    """CPU seconds (user and system) and voluntary context switches of every thread of ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches:"):
                        switches += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return cpu, switches


def _children_cpu() -> float:
    """CPU seconds of the children waited for so far: around one client run, that
    client's (the servers are waited for only when they stop)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_round(results: Results, endpoints: dict[str, str], kubelet_root: str, size: int,
                  round_: int, serial: int, concurrent: int, pids: dict[str, int] | None = None
                  ) -> None:
    """One round at one mount-table size: each server in turn, the order rotated per round
    so that no server always follows the same one."""
    order = SERVERS[round_ % len(SERVERS):] + SERVERS[:round_ % len(SERVERS)]
    for server in order:
        run = pairs(endpoints[server], kubelet_root, serial)
        results.add_serial(server, size, run)
        before = process_cost(pids[server]) if pids else None
        caller_before, started = _children_cpu(), time.monotonic()
        rate = pairs(endpoints[server], kubelet_root, concurrent, callers=CALLERS, warmup=CALLERS)
        if pids and before is not None:
            after = process_cost(pids[server])
            total = results.cost.setdefault(server, [0.0] * 5)
            for i, value in enumerate((rate.pairs, after[0] - before[0], after[1] - before[1],
                                       _children_cpu() - caller_before, time.monotonic() - started)):
                total[i] += value
        results.add_rate(server, size, rate)
        if server == DRIVER:
            results.driver_pairs += run.pairs + rate.pairs


def top_up(results: Results, endpoint: str, kubelet_root: str, total: int, batch: int = 5000) -> None:
    """More pairs at 32 callers until the driver has answered ``total`` since it started."""
    while results.driver_pairs < total:
        count = min(batch, total - results.driver_pairs)
        results.driver_pairs += pairs(endpoint, kubelet_root, count, callers=min(CALLERS, count),
                                      warmup=0).pairs


def measure_cold_starts(results: Results, count: int, workdir: str,
                        driver: Callable[[str], tuple[list[str], str, str, dict[str, str]]]) -> None:
    """``count`` cold starts of each server, interleaved, and as many bare ``import grpc`` runs.

    ``driver(workdir)`` gives the driver's command, socket, log file and environment.
    """
    for i in range(count):
        command, endpoint, log_path, env = driver(os.path.join(workdir, f"driver{i}"))
        results.cold[DRIVER].append(cold_start(command, endpoint, log_path, env))
        for n, server in enumerate(NOOPS):
            directory = os.path.join(workdir, f"noop{n}-{i}")
            os.makedirs(directory)
            endpoint = os.path.join(directory, "csi.sock")
            results.cold[server].append(cold_start(noop_command(server, endpoint), endpoint,
                                                   os.path.join(directory, "server.log")))
        results.import_grpc.append(import_grpc_seconds())
    results.import_floor_rss = import_floor_rss_kib()
    results.deps_floor_rss = import_floor_rss_kib("import prometheus_client")


# Targets: the driver against the floors measured in the same run.
P50_OVER_PYTHON_MAX = 1.3
P50_OVER_GO_MAX = 2.0
RATE_OVER_PYTHON_MIN = 0.8
P50_GROWTH_MAX = 1.2
P99_GROWTH_MAX = 1.5
COLD_START_MAX = 0.25
RSS_IDLE_MAX_KIB = 35 * 1024
RSS_GROWTH_MAX_KIB = 2 * 1024


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def calls_section(results: Results) -> Section:
    s = Section(f"[8] Kubelet-faithful calls: bench/kubelet-client (grpc-go), a new connection per call, "
                f"{VOLUME_TYPE}; one caller, and {CALLERS} callers for pairs/s",
                ("server", "filler mounts", "pair p50", "p99", "publish p50", "unpublish p50",
                 f"{CALLERS} callers pairs/s", "p50 vs Python no-op", "p50 vs Go no-op"))
    for server in SERVERS:
        for size in SIZES:
            run = results.serial[server][size]
            s.add(server, fmt_count(size), fmt_seconds(results.p50(server, size)),
                  fmt_seconds(results.p99(server, size)), fmt_seconds(percentile(run.publish, 50)),
                  fmt_seconds(percentile(run.unpublish, 50)), fmt_count(results.rate(server, size)),
                  fmt_ratio(results.p50(server, size) / results.p50(PYTHON_NOOP, size)),
                  fmt_ratio(results.p50(server, size) / results.p50(GO_NOOP, size)))
    return s


def cost_section(results: Results) -> Section:
    """What a pair costs each server at 32 callers: the CPU that bounds pairs/s on a
    busy node, and the thread switches behind much of it."""
    s = Section(f"[12] Kubelet-faithful cost per pair at {CALLERS} callers (server process, all threads; "
                "the caller's CPU beside it)",
                ("server", "pairs", "CPU per pair", "voluntary context switches per pair",
                 "CPU vs Python no-op", "caller CPU per pair", f"CPUs busy (of {os.cpu_count()})"))
    reference = results.cost[PYTHON_NOOP][1] / results.cost[PYTHON_NOOP][0]
    for server in SERVERS:
        count, cpu, switches, caller_cpu, wall = results.cost[server]
        s.add(server, fmt_count(count), fmt_seconds(cpu / count), f"{switches / count:.1f}",
              fmt_ratio(cpu / count / reference), fmt_seconds(caller_cpu / count),
              f"{(cpu + caller_cpu) / wall:.2f}")
    return s


def cold_section(results: Results) -> Section:
    s = Section("[9] Kubelet-faithful cold start: process start to the first good Probe, "
                "the Go client dialing anew every 1 ms",
                ("process", "starts", "median", "max", "median vs import grpc"))
    reference = statistics.median(results.import_grpc)
    for server in SERVERS:
        times = results.cold[server]
        s.add(server, str(len(times)), fmt_seconds(statistics.median(times)), fmt_seconds(max(times)),
              fmt_ratio(statistics.median(times) / reference))
    s.add('python -c "import grpc" (start to exit)', str(len(results.import_grpc)), fmt_seconds(reference),
          fmt_seconds(max(results.import_grpc)), "1.00x")
    return s


def memory_section(results: Results) -> Section:
    s = Section("[10] Kubelet-faithful memory (VmRSS)", ("process, state", "VmRSS", "peak (VmHWM)"))
    idle, after = results.rss_idle[DRIVER], results.rss_after
    s.add(f"{DRIVER}, idle after start", fmt_mb(idle["VmRSS"]), fmt_mb(idle["VmHWM"]))
    s.add(f"{DRIVER}, after {results.driver_pairs:,} kubelet-faithful pairs", fmt_mb(after["VmRSS"]),
          fmt_mb(after["VmHWM"]))
    s.add(f"{DRIVER}, growth", fmt_mb(after["VmRSS"] - idle["VmRSS"]), "")
    for server in NOOPS:
        rss = results.rss_idle[server]
        s.add(f"{server}, idle after start", fmt_mb(rss["VmRSS"]), fmt_mb(rss["VmHWM"]))
    floor = results.import_floor_rss
    s.add(f"{IMPORT_FLOOR}, after the imports", fmt_mb(floor["VmRSS"]), fmt_mb(floor["VmHWM"]))
    deps = results.deps_floor_rss
    s.add(f"{DEPS_FLOOR}, after the imports", fmt_mb(deps["VmRSS"]), fmt_mb(deps["VmHWM"]))
    return s


def add_targets(st: Section, results: Results) -> None:
    """The kubelet-faithful rows of the targets table."""
    small, large = SIZES[0], SIZES[-1]
    over_python = results.p50(DRIVER, small) / results.p50(PYTHON_NOOP, small)
    over_go = results.p50(DRIVER, small) / results.p50(GO_NOOP, small)
    rate = min(results.rate(DRIVER, size) / results.rate(PYTHON_NOOP, size) for size in SIZES)
    p50_growth = results.p50(DRIVER, large) / results.p50(DRIVER, small)
    p99_growth = results.p99(DRIVER, large) / results.p99(DRIVER, small)
    cold = results.cold_median(DRIVER)
    idle = results.rss_idle[DRIVER]["VmRSS"]
    growth = results.rss_after["VmRSS"] - idle
    st.add(f"kubelet-faithful pair p50 over the Python no-op's ({small} mounts)", fmt_ratio(over_python),
           f"<= {P50_OVER_PYTHON_MAX:g}x", _verdict(over_python <= P50_OVER_PYTHON_MAX))
    st.add(f"kubelet-faithful pair p50 over the Go no-op's ({small} mounts)", fmt_ratio(over_go),
           f"<= {P50_OVER_GO_MAX:g}x", _verdict(over_go <= P50_OVER_GO_MAX))
    st.add(f"kubelet-faithful {CALLERS} callers, pairs/s over the Python no-op's (lower of "
           f"{small} and {large:,} mounts)", f"{rate:.0%}", f">= {RATE_OVER_PYTHON_MIN:.0%}",
           _verdict(rate >= RATE_OVER_PYTHON_MIN))
    st.add(f"kubelet-faithful pair p50 at {large:,} mounts over p50 at {small}", fmt_ratio(p50_growth),
           f"<= {P50_GROWTH_MAX:g}x", _verdict(p50_growth <= P50_GROWTH_MAX))
    st.add(f"kubelet-faithful pair p99 at {large:,} mounts over p99 at {small}", fmt_ratio(p99_growth),
           f"<= {P99_GROWTH_MAX:g}x", _verdict(p99_growth <= P99_GROWTH_MAX))
    st.add("kubelet-faithful cold start (median, first good Probe)", fmt_seconds(cold),
           f"< {COLD_START_MAX * 1e3:.0f} ms", _verdict(cold < COLD_START_MAX))
    st.add('  beside it: cold start over python -c "import grpc"',
           fmt_ratio(cold / statistics.median(results.import_grpc)), "", "")
    st.add("kubelet-faithful RSS idle", fmt_mb(idle), f"<= {fmt_mb(RSS_IDLE_MAX_KIB)}",
           _verdict(idle <= RSS_IDLE_MAX_KIB))
    st.add(f"  beside it: RSS idle over {IMPORT_FLOOR}",
           fmt_ratio(idle / results.import_floor_rss["VmRSS"]), "", "")
    st.add(f"  beside it: RSS idle over {DEPS_FLOOR}",
           fmt_ratio(idle / results.deps_floor_rss["VmRSS"]), "", "")
    st.add(f"kubelet-faithful RSS growth over {results.driver_pairs:,} pairs", fmt_mb(growth),
           f"< {fmt_mb(RSS_GROWTH_MAX_KIB)}", _verdict(growth < RSS_GROWTH_MAX_KIB))
