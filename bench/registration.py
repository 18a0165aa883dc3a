"""Benchmark: the registration example in process, fsync on.

Measures full-ack append latency from one client and throughput from 16 concurrent client
threads. Prints a table; timings never fail anything.

    .venv/bin/python bench/registration.py [--tasks N] [--seconds 5] [--workers W]
    (make bench runs the full suite; --workers W runs it on a LocalCluster of W worker processes)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import headwater as hw  # noqa: E402
from bench.common import closed_loop, fsync_latency_ms, percentile  # noqa: E402
from examples.registration import UserSignUp, registration  # noqa: E402


def latency(depot: object, count: int) -> list[float]:
    timings = []
    for i in range(count):
        event = UserSignUp(f"solo{i}@example.com", "h", 1_700_000_000_000)
        started = time.perf_counter()
        depot.append(event)  # type: ignore[attr-defined]
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1,
                        help="tasks of the module (default 1: in one process, the fastest; see docs/benchmarks.md)")
    parser.add_argument("--count", type=int, default=3000, help="sequential appends for the latency run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=0,
                        help="run on a LocalCluster of this many worker processes (default 0: InProcessCluster)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="headwater-bench-") as directory:
        fsync_ms = fsync_latency_ms(directory)["p50_ms"]
        path = os.path.join(directory, "data")
        with (hw.LocalCluster(path, workers=args.workers) if args.workers else hw.InProcessCluster(path)) as cluster:
            cluster.deploy(registration, tasks=args.tasks)
            depot = cluster.depot("registration", "registrations")
            latency(depot, 300)  # warm up
            solo = latency(depot, args.count)
            run = closed_loop(lambda n: lambda i: depot.append(UserSignUp(f"c{n}-{i}@example.com", "h", 1_700_000_000_000)),
                              args.clients, args.seconds)
            rate, concurrent = run.ops_per_s, run.latencies_s
    print(f"\nheadwater registration benchmark — {os.cpu_count()} cores, fsync p50 {fsync_ms:.3f} ms, "
          f"tasks={args.tasks}, {f'LocalCluster with {args.workers} workers' if args.workers else 'InProcessCluster'}, "
          "full ack, fsync on\n")
    print(f"| {'measure':<44} | {'value':>12} |")
    print(f"|{'-' * 46}|{'-' * 14}|")
    rows = [
        ("full-ack append latency p50, 1 client (ms)", f"{percentile(solo, 0.5) * 1000:.3f}"),
        ("full-ack append latency p99, 1 client (ms)", f"{percentile(solo, 0.99) * 1000:.3f}"),
        (f"throughput, {args.clients} client threads (appends/s)", f"{rate:,.0f}"),
        (f"latency p50, {args.clients} clients (ms)", f"{percentile(concurrent, 0.5) * 1000:.3f}"),
        (f"latency p99, {args.clients} clients (ms)", f"{percentile(concurrent, 0.99) * 1000:.3f}"),
    ]
    for name, value in rows:
        print(f"| {name:<44} | {value:>12} |")


if __name__ == "__main__":
    main()
