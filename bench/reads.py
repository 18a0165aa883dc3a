"""Benchmark: reads in process — point reads, fan-out queries, and ranges over a huge subindexed map.

    .venv/bin/python bench/reads.py            # --elements 1000000 by default
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import headwater as hw  # noqa: E402


@dataclass
class Fill:
    start: int
    count: int


@dataclass
class Profile:
    user: int
    city: str


reads = hw.Module("reads")
fills = reads.depot("fills", Fill, partitioned=False)
profiles_depot = reads.depot("profiles", Profile, partition_by="user")
big = reads.pstate("big", hw.Record(items=hw.Map(int, str, subindexed=True)), partitioned=False)
profiles = reads.pstate("profiles", hw.Map(int, hw.Record(address=hw.Record(city=str, zip=str), tags=hw.Set(str))))


@reads.microbatch(fills)
def fill(ctx: hw.Context, f: Fill) -> None:
    items = ctx.pstate(big)["items"]
    for i in range(f.start, f.start + f.count):
        items[i].set(f"value-{i}")


@reads.stream(profiles_depot)
def profile(ctx: hw.Context, p: Profile) -> None:
    ctx.pstate(profiles)[p.user].set({"address": {"city": p.city, "zip": "00000"}, "tags": {"a", "b"}})


@reads.step
def local_count(ctx: hw.Context) -> int:
    return 1


@reads.query
def fan_out(ctx: hw.QueryContext) -> int:
    return sum(ctx.call_all(local_count))


def timed(fn, count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return timings


def row(name: str, timings: list[float], target_us: float) -> str:
    ordered = sorted(timings)
    p50, p99 = statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99)] * 1e6
    verdict = "meets" if p50 <= target_us else "misses"
    return f"| {name:<52} | {p50:9.1f} | {p99:9.1f} | {target_us:9.0f} {verdict:<6} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="headwater-reads-") as directory, hw.InProcessCluster(directory) as cluster:
        cluster.deploy(reads, tasks=8)
        started = time.perf_counter()
        chunk = 10_000
        cluster.depot("reads", "fills").append_many(
            [Fill(s, min(chunk, args.elements - s)) for s in range(0, args.elements, chunk)], ack="append")
        cluster.wait_for_microbatch("reads", "fill", processed=-(-args.elements // chunk), timeout=3600)
        load_s = time.perf_counter() - started
        cluster.depot("reads", "profiles").append_many([Profile(u, f"city-{u}") for u in range(1000)])
        view = cluster.pstate("reads", "profiles")
        items = cluster.pstate("reads", "big")["items"]
        assert items.size() == args.elements
        middle = args.elements // 2
        assert len(items.items(middle, None, limit=100)) == 100
        rows = [
            row("point read of a nested field, client in process", timed(lambda: view[7]["address"]["city"].get(), args.count), 30),
            row("call_all over 8 tasks, small results", timed(lambda: cluster.query("reads", "fan_out")(timeout=None), args.count), 1000),
            row(f"100-element range in a {args.elements:,}-element subindexed map",
                timed(lambda: items.items(middle, None, limit=100), args.count // 3), 1000),
            row("size() of that map (O(1))", timed(items.size, args.count), 30),
        ]
    print(f"\nheadwater reads — {os.cpu_count()} cores, 8 tasks, loaded {args.elements:,} elements in {load_s:.1f}s\n")
    print(f"| {'measure':<52} | {'p50 µs':>9} | {'p99 µs':>9} | {'target µs':>16} |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 11}|{'-' * 18}|")
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()
