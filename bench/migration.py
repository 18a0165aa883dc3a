"""Workload 9 — a schema migration of a large PState: how soon new code serves, and what the rewrite costs.

A module holds N entries (1,000,000; quick 100,000) in `users`, a `hw.Map(int, str)` of names.
The update declares `hw.migrated(hw.Record(name=str, length=int), ...)` for its values, on an
`InProcessCluster` of `--tasks` tasks. Measured:

- the time from calling `update` until the new code has answered a read of an old entry (converted
  on read) and a full-ack append (processed by the new handler);
- the background rewrite's throughput: N entries over the time until `cluster.migrations()` says
  done, all tasks together;
- full-ack append latency from one client while the rewrite runs, against the same appends
  before the update (goal: p99 at most 2×).

    .venv/bin/python -m bench.migration [--quick]
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import headwater as hw
from bench.common import percentile
from bench.harness import Env, Section, table

LOAD_BATCH = 10_000  # events per append_many while loading
BASELINE_APPENDS = 2_000  # full-ack appends measured before the update


@dataclass
class Rename:
    user: int
    name: str


def module(migrated: bool) -> hw.Module:
    m = hw.Module("users")
    renames = m.depot("renames", Rename, partition_by="user")
    value = (hw.migrated(hw.Record(name=str, length=int), id="names-as-records",
                         fn=lambda name: {"name": name, "length": len(name)}) if migrated else str)
    users = m.pstate("users", hw.Map(int, value))

    @m.stream(renames)
    def rename(ctx: hw.Context, r: Rename) -> None:
        ctx.pstate(users)[r.user].set({"name": r.name, "length": len(r.name)} if migrated else r.name)

    return m


def _latencies(depot: Any, users: range) -> list[float]:
    found = []
    for user in users:
        started = time.perf_counter()
        depot.append(Rename(user, f"renamed-{user}"))
        found.append((time.perf_counter() - started) * 1000)
    return found


def run(env: Env) -> Section:
    entries = 100_000 if env.quick else 1_000_000
    with hw.InProcessCluster(env.directory("w9-migration")) as cluster:
        cluster.deploy(module(False), tasks=env.tasks)
        depot = cluster.depot("users", "renames")
        loading = time.monotonic()
        for start in range(0, entries, LOAD_BATCH):
            depot.append_many([Rename(u, f"user-{u}") for u in range(start, min(entries, start + LOAD_BATCH))])
        print(f"  w9 loaded {entries:,} entries in {time.monotonic() - loading:.1f} s", flush=True)
        before: list[float] = []  # measured from a thread, as during the rewrite
        baseline = threading.Thread(target=lambda: before.extend(
            _latencies(depot, range(entries, entries + BASELINE_APPENDS))))
        baseline.start()
        baseline.join()

        started = time.monotonic()
        cluster.update(module(True))
        read = cluster.pstate("users", "users")[7].get()
        depot.append(Rename(entries + BASELINE_APPENDS, "first"))
        serving_s = time.monotonic() - started
        assert read == {"name": "user-7", "length": 6}, read

        during: list[float] = []
        finished = threading.Event()

        def append_until_done() -> None:  # one client, full acks, while the rewrite runs
            user = entries + BASELINE_APPENDS + 1
            while not finished.is_set():
                during.extend(_latencies(depot, range(user, user + 50)))
                user += 50

        appender = threading.Thread(target=append_until_done)
        appender.start()
        while not all(m["done"] for m in cluster.migrations("users")):
            time.sleep(0.05)
        rewrite_s = time.monotonic() - started
        finished.set()
        appender.join()
    print(f"  w9 serving after {serving_s:.3f} s; rewrite {rewrite_s:.1f} s; {len(during)} appends during it",
          flush=True)
    rows = [["before the update", str(len(before)), f"{percentile(before, 0.5):.3f}", f"{percentile(before, 0.99):.3f}"],
            ["during the rewrite", str(len(during)), f"{percentile(during, 0.5):.3f}",
             f"{percentile(during, 0.99):.3f}"]]
    ratio = percentile(during, 0.99) / percentile(before, 0.99)
    markdown = "\n\n".join([
        f"`cluster.update` of a module holding {entries:,} PState entries to a migrated value schema "
        f"({env.tasks} tasks, in process):",
        table(["measure", "value", "goal"], [
            ["update called → new code served a converted read and a full-ack append", f"{serving_s:.3f} s", "≤ 1 s"],
            ["background rewrite, all tasks", f"{entries / rewrite_s:,.0f} entries/s ({rewrite_s:.1f} s)", ""],
            ["append p99 during the rewrite ÷ before", f"{ratio:.2f}×", "≤ 2×"]]),
        "Full-ack appends from one client (ms):",
        table(["when", "appends", "p50 ms", "p99 ms"], rows),
    ])
    return Section("migration", "9. Migrating a large PState", markdown,
                   {"entries": entries, "serving_s": serving_s, "rewrite_s": rewrite_s, "before_ms": before,
                    "during_ms": during})


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
