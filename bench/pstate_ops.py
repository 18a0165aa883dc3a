"""Benchmark: single PState operations, at the layout level and through View + PStateExecutor.

    .venv/bin/python bench/pstate_ops.py            # --elements 1000000 by default

Every operation runs on a RocksStore (the engine's adapter), over a Txn as in a handler:
"layout" calls `PStateLayout.read`/`write` with canonical steps; "view" goes through `View` and
the engine's `PStateExecutor`, as `ctx.pstate(p)[...]` does. Writes run in rounds of
`ROUND_OPS` over one Txn, committed between rounds (untimed), so the overlay stays the size a
round's would. Each figure is the median of per-call timings; run it more than once on a busy
machine and compare.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import headwater as hw
from headwater.engine.context import PStateExecutor
from headwater.engine.runtime import PStateRuntime
from headwater.engine.txns import add_txn_to_batch
from headwater.pstate import PStateLayout, Txn, View
from headwater.storage import Batch, RocksStore

ROUND_OPS = 100  # operations per Txn before it is committed and replaced
FILL_CHUNK = 10_000  # elements per committed Txn while loading the big map

bench = hw.Module("bench")
counts = bench.pstate("counts", hw.Map(str, int))
big = bench.pstate("big", hw.Record(items=hw.Map(int, str, subindexed=True)), partitioned=False)
accounts = bench.pstate("accounts", hw.Map(str, hw.Record(pwd_hash=str, registered_ms=int)))
ACCOUNT = {"pwd_hash": "x" * 60, "registered_ms": 1_700_000_000_000}


@dataclass
class Profile:
    user: int
    city: str


profiles_depot = bench.depot("profiles", Profile, partition_by="user")
profiles = bench.pstate("profiles", hw.Map(int, hw.Record(address=hw.Record(city=str, zip=str), tags=hw.Set(str))))


@bench.stream(profiles_depot)
def profile(ctx: hw.Context, p: Profile) -> None:
    ctx.pstate(profiles)[p.user].set({"address": {"city": p.city, "zip": "00000"}, "tags": {"a", "b"}})


class Bed:
    """One RocksStore holding the benchmark's PStates, and a Txn over it like a handler's."""

    def __init__(self, directory: str) -> None:
        self.store = RocksStore(directory)
        self.reader = self.store.reader("pstate")
        self.runtimes: dict[str, PStateRuntime] = {}
        for pstate_id, decl in enumerate(bench.pstates.values()):
            keyed = isinstance(decl.schema, hw.Map) and decl.partitioned
            layout = PStateLayout(decl.schema, pstate_id, top_level_map_partitioned=keyed)
            self.runtimes[decl.name] = PStateRuntime(decl, pstate_id, layout, keyed)
        self.txn = Txn(self.reader)

    def layout(self, name: str) -> PStateLayout:
        return self.runtimes[name].layout

    def view(self, name: str) -> View:
        """A handler's view of PState `name` over the current Txn (one task of one)."""
        runtime = self.runtimes[name]
        executor = PStateExecutor(runtime, self.txn, 0, 1, writable=True)
        return View(executor, runtime.decl.schema, name=f"bench.{name}")

    def commit(self) -> None:
        batch = Batch()
        add_txn_to_batch(self.txn, batch)
        if len(batch):
            self.store.write(batch, sync=False)
        self.txn = Txn(self.reader)


@dataclass
class Case:
    """One measured operation: `op(i)` for the i-th call, `new_round()` every ROUND_OPS calls."""

    name: str
    op: Callable[[int], Any]
    target_us: float
    new_round: Callable[[], None] = lambda: None
    count_divisor: int = 1  # slow operations run count // count_divisor times per pass
    pass_p50s: list[float] = field(default_factory=list)
    timings: list[float] = field(default_factory=list)

    def run(self, count: int) -> None:
        timings = []
        clock = time.perf_counter
        for i in range(max(1, count // self.count_divisor)):
            if i % ROUND_OPS == 0:
                self.new_round()
            started = clock()
            self.op(i)
            timings.append(clock() - started)
        self.pass_p50s.append(statistics.median(timings))
        self.timings += timings

    def row(self) -> str:
        # The median of the passes' medians: a pass slowed by other work on the machine moves it little.
        p50, best = statistics.median(self.pass_p50s) * 1e6, min(self.pass_p50s) * 1e6
        p99 = sorted(self.timings)[int(len(self.timings) * 0.99)] * 1e6
        verdict = "meets" if p50 <= self.target_us else "misses"
        return f"| {self.name:<68} | {p50:8.1f} | {best:8.1f} | {p99:8.1f} | {self.target_us:6.0f} {verdict:<6} |"


def single_element_cases(bed: Bed) -> list[Case]:
    """The single-element operations, each at the layout level and through View + executor."""
    views: dict[str, View] = {}

    def new_round() -> None:
        bed.commit()
        views.update({name: bed.view(name) for name in bed.runtimes})

    new_round()
    views["accounts"]["a1"].set(ACCOUNT)
    new_round()
    new_keys = itertools.count(10**12)  # above every key the range benchmark loads: always a new element
    counts_layout, big_layout, accounts_layout = bed.layout("counts"), bed.layout("big"), bed.layout("accounts")
    operations: list[tuple[str, Callable[[int], Any], Callable[[int], Any]]] = [
        ('["w1"].increment(3)  Map(str, int)',
         lambda i: counts_layout.write(bed.txn, ("w1",), "increment", (3,)),
         lambda i: views["counts"]["w1"].increment(3)),
        ('["items"][i].set("v")  new element, subindexed Map(int, str)',
         lambda i: big_layout.write(bed.txn, ("items", next(new_keys)), "set", ("v",)),
         lambda i: views["big"]["items"][next(new_keys)].set("v")),
        ('["a1"].exists()  Map(str, Record)',
         lambda i: accounts_layout.read(bed.txn, ("a1",), "exists"),
         lambda i: views["accounts"]["a1"].exists()),
        ('["a1"].set({...})  Map(str, Record)',
         lambda i: accounts_layout.write(bed.txn, ("a1",), "set", (ACCOUNT,)),
         lambda i: views["accounts"]["a1"].set(ACCOUNT)),
        ('["a1"]["pwd_hash"].get()  Map(str, Record)',
         lambda i: accounts_layout.read(bed.txn, ("a1", "pwd_hash"), "get"),
         lambda i: views["accounts"]["a1"]["pwd_hash"].get()),
    ]
    cases = [Case("Txn(reader)", lambda i: Txn(bed.reader), 1)]
    for name, layout_op, view_op in operations:
        cases.append(Case(f"layout {name}", layout_op, 10, new_round))
        cases.append(Case(f"view   {name}", view_op, 15, new_round))
    return cases


def nested_read_case(bed: Bed) -> Case:
    layout = bed.layout("profiles")
    layout.write(bed.txn, (7,), "set", ({"address": {"city": "city-7", "zip": "00000"}, "tags": {"a", "b"}},))
    bed.commit()
    return Case('layout [7]["address"]["city"].get(), committed',
                lambda i: layout.read(bed.reader, (7, "address", "city"), "get"), 10)


def client_case(cluster: hw.InProcessCluster) -> Case:
    """A point read of a nested field by a client in process, end to end."""
    cluster.deploy(bench, tasks=4)
    cluster.depot("bench", "profiles").append_many([Profile(u, f"city-{u}") for u in range(100)])
    view = cluster.pstate("bench", "profiles")
    assert view[7]["address"]["city"].get() == "city-7"
    return Case('client [7]["address"]["city"].get(), in process, end to end',
                lambda i: view[7]["address"]["city"].get(), 30)


def range_cases(bed: Bed, elements: int) -> tuple[list[Case], str]:
    """A 100-element page from the middle of a subindexed map of `elements` elements."""
    layout = bed.layout("big")
    started = time.perf_counter()
    for start in range(0, elements, FILL_CHUNK):
        chunk = {i: f"value-{i}" for i in range(start, min(start + FILL_CHUNK, elements))}
        layout.write(bed.txn, ("items",), "merge", (chunk,))
        bed.commit()
    load_s = time.perf_counter() - started
    middle = elements // 2
    assert len(layout.read(bed.reader, ("items",), "items", (middle, None), {"limit": 100})) == 100
    view = bed.view("big")["items"]
    what = f"items(middle, limit=100) of {elements:,}"
    cases = [
        Case(f"layout {what}, committed",
             lambda i: layout.read(bed.reader, ("items",), "items", (middle, None), {"limit": 100}), 1000,
             count_divisor=10),
        Case(f"view   {what}, over a Txn", lambda i: view.items(middle, limit=100), 1000, count_divisor=10),
    ]
    return cases, f"loaded {elements:,} elements by merge() in chunks of {FILL_CHUNK:,} in {load_s:.1f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--count", type=int, default=2000, help="calls measured per operation and pass")
    parser.add_argument("--passes", type=int, default=5, help="passes over every operation, after one to warm up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="headwater-pstate-ops-") as directory, \
            hw.InProcessCluster(os.path.join(directory, "cluster")) as cluster:
        bed = Bed(os.path.join(directory, "bed"))
        ranges, load_note = range_cases(bed, args.elements)
        cases = [*single_element_cases(bed), nested_read_case(bed), client_case(cluster), *ranges]
        for case in cases:
            case.run(args.count)  # warm up: caches, the allocator, branch predictors
            case.pass_p50s.clear()
            case.timings.clear()
        for _ in range(args.passes):  # interleaved, so every operation sees the same background load
            for case in cases:
                case.run(args.count)
        bed.store.close()
    print(f"\nheadwater PState operations — {os.cpu_count()} cores, RocksStore, {args.passes} passes of "
          f"{args.count} calls, load {os.getloadavg()[0]:.1f}\n")
    print(f"| {'operation':<68} | {'p50 µs':>8} | {'best µs':>8} | {'p99 µs':>8} | {'target µs':>13} |")
    print(f"|{'-' * 70}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 15}|")
    for case in cases:
        print(case.row())
    print(f"\n{load_note}; p50: median over passes of each pass's median; best: the fastest pass's median")


if __name__ == "__main__":
    main()
