"""What every comparison shares: closed-loop client threads, percentiles, the machine's numbers.

A *run* is one measurement of one system at one concurrency: `clients` threads each call their
operation back to back for `seconds`; the first `warmup_s` is discarded. Each workload repeats its
runs (`runs` times, alternating the systems so that they see the same background load) and reports
the median over runs of each run's throughput and latency percentiles.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Measured",
    "Run",
    "closed_loop",
    "fsync_latency_ms",
    "loadavg",
    "machine",
    "percentile",
    "rss_bytes",
    "du_bytes",
]

SAMPLES_KEPT_MAX = 20_000  # latency samples kept per system and concurrency for the plots


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; `values` need not be sorted."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass
class Run:
    """One run: operations per second over the measured window and each operation's latency (s)."""

    ops_per_s: float
    latencies_s: list[float]
    errors: int = 0
    load_1m: float = field(default_factory=lambda: loadavg()[0])
    cpu_us_per_op: float = float("nan")  # this process (every thread) + the server processes, per operation
    server_cpu_us_per_op: float = float("nan")  # the server processes' part

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 0.99) * 1000


@dataclass
class Measured:
    """All runs of one system at one concurrency, summarised as medians over runs."""

    system: str
    clients: int
    runs: list[Run] = field(default_factory=list)
    note: str = ""

    @property
    def ops_per_s(self) -> float:
        return statistics.median(r.ops_per_s for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def cpu_us_per_op(self) -> float:
        return statistics.median(r.cpu_us_per_op for r in self.runs)

    @property
    def server_cpu_us_per_op(self) -> float:
        return statistics.median(r.server_cpu_us_per_op for r in self.runs)

    def summary(self) -> dict[str, Any]:
        samples = [x for r in self.runs for x in r.latencies_s]
        step = max(1, len(samples) // SAMPLES_KEPT_MAX)
        return {
            "system": self.system,
            "clients": self.clients,
            "ops_per_s": self.ops_per_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "cpu_us_per_op": self.cpu_us_per_op,
            "server_cpu_us_per_op": self.server_cpu_us_per_op,
            "runs": [{"ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "count": len(r.latencies_s),
                      "errors": r.errors, "load_1m": r.load_1m, "cpu_us_per_op": r.cpu_us_per_op,
                      "server_cpu_us_per_op": r.server_cpu_us_per_op} for r in self.runs],
            "samples_ms": [x * 1000 for x in sorted(samples)[::step]],
            "note": self.note,
        }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK")


def closed_loop(make_client: Callable[[int], Callable[[int], Any]], clients: int, seconds: float,
                *, warmup_s: float = 0.3, close_client: Callable[[Callable[[int], Any]], None] | None = None,
                server_pids: Callable[[], list[int]] | None = None) -> Run:
    """`clients` threads each run `op(i)` back to back; `make_client(n)` builds thread n's `op`.

    Clients are built before the clock starts (connections opened, statements prepared). An
    operation that raises counts as an error and its latency is not recorded. CPU is counted
    over the measured window for this process and for `server_pids()` (the peer's processes).
    """
    ops = [make_client(n) for n in range(clients)]
    pids = server_pids() if server_pids is not None else []
    barrier = threading.Barrier(clients + 1)
    timings: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[BaseException] = []
    window: dict[str, float] = {}

    def drive(n: int) -> None:
        op, record, i = ops[n], timings[n].append, 0
        barrier.wait()
        stop = window["stop"]
        clock = time.perf_counter
        while True:
            started = clock()
            if started >= stop:
                break
            try:
                op(i)
            except Exception as e:  # noqa: BLE001 - counted and reported; the benchmark goes on
                errors[n] += 1
                if not first_error:
                    first_error.append(e)
            else:
                record((started, clock() - started))
            i += 1

    threads = [threading.Thread(target=drive, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    begin = time.perf_counter()
    window["stop"] = begin + warmup_s + seconds
    barrier.wait()
    time.sleep(warmup_s)
    cpu_before = sum(os.times()[:2]), sum(process_cpu_s(pid) for pid in pids)
    for t in threads:
        t.join()
    cpu_after = sum(os.times()[:2]), sum(process_cpu_s(pid) for pid in pids)
    if close_client is not None:
        for op in ops:
            close_client(op)
    measured_from = begin + warmup_s
    latencies = [lat for per in timings for started, lat in per if started >= measured_from]
    completed = sum(1 for per in timings for started, lat in per if started >= measured_from)
    if errors and sum(errors) and not latencies:
        raise RuntimeError(f"every operation failed; the first error: {first_error[0]!r}") from first_error[0]
    # CPU is counted from the end of the warm-up until the last operation returned: about the
    # operations that started in the measured window.
    window_ops = completed
    server_cpu = cpu_after[1] - cpu_before[1]
    total_cpu = cpu_after[0] - cpu_before[0] + server_cpu
    return Run(completed / seconds, latencies, errors=sum(errors),
               cpu_us_per_op=total_cpu / max(1, window_ops) * 1e6,
               server_cpu_us_per_op=server_cpu / max(1, window_ops) * 1e6 if pids else 0.0)


def fsync_latency_ms(directory: str, samples: int = 300) -> dict[str, float]:
    """p50/p99 of write(4 KiB) + fdatasync in `directory`: the floor under every durable commit."""
    path = os.path.join(directory, "fsync-probe")
    timings = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"x" * 4096
        for _ in range(samples):
            os.write(fd, block)
            started = time.perf_counter()
            os.fdatasync(fd)
            timings.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.remove(path)
    return {"p50_ms": percentile(timings, 0.5) * 1000, "p99_ms": percentile(timings, 0.99) * 1000}


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def du_bytes(path: str) -> int:
    """Disk usage of a directory tree in bytes (allocated blocks, like `du -s`)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def _first_line(command: Iterable[str]) -> str:
    try:
        return subprocess.run(list(command), capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def machine(directory: str) -> dict[str, Any]:
    """The numbers a reader needs to compare this run with theirs."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    root = os.path.join(os.path.dirname(__file__), "..")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fsync": fsync_latency_ms(directory),
        "disk": " ".join(_df(directory)),
        "commit": _first_line(["git", "-C", root, "rev-parse", "--short", "HEAD"]),
        "dirty": bool(subprocess.run(["git", "-C", root, "status", "--porcelain", "headwater"],
                                     capture_output=True, text=True).stdout.strip()),
    }


def _df(directory: str) -> list[str]:
    try:
        lines = subprocess.run(["df", "-T", directory], capture_output=True, text=True, timeout=10).stdout.splitlines()
        fields = lines[1].split()
        return [fields[0], fields[1]]
    except (OSError, IndexError, subprocess.SubprocessError):
        return ["unknown"]
