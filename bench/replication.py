"""Workload 8 — replication: what a second copy of every task costs, and how long a failover takes.

The registration workload (`examples/registration.py`, full acks) on a `LocalCluster` of 2
worker processes, with `replication=1` and `replication=2` (each task's leader on one worker,
its follower on the other: every write batch is shipped and applied there, and no ack leaves
before the follower has it), and on a `LocalCluster` of 1 worker, for throughput by worker count.
The systems run in alternating order, so background load spreads evenly.

Failover: with `replication=2`, the worker leading a task is SIGKILLed while nothing else runs,
once the follower is in sync; the time is from the kill until a full-ack append to that task
is acknowledged by its new leader, as a client sees it.

    .venv/bin/python -m bench.replication [--quick]
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from typing import Any, Callable

import headwater as hw
from bench.common import Measured, closed_loop
from bench.harness import Env, Section, alternate, table, throughput_table
from examples.registration import UserSignUp, registration
from headwater.schema.keys import task_for_key

WORKERS = 2
R1 = f"LocalCluster of {WORKERS} workers, replication=1"
R2 = f"LocalCluster of {WORKERS} workers, replication=2"
ONE_WORKER = "LocalCluster of 1 worker"
FAILOVERS = 10  # kills measured (quick: 4)
FAILOVER_WAIT_MAX_S = 60.0
IN_SYNC_WAIT_MAX_S = 60.0


def in_sync(cluster: hw.LocalCluster, module: str = "registration") -> list[dict[str, Any]]:
    """The module's status rows once every task is up and every follower in sync (a kill now fails over)."""
    deadline = time.monotonic() + IN_SYNC_WAIT_MAX_S
    while True:
        rows = cluster.status()[module]
        if all(row["up"] for row in rows) and all(f["in_sync"] for row in rows for f in row["followers"]):
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"the followers were not in sync within {IN_SYNC_WAIT_MAX_S}s: {rows}")
        time.sleep(0.05)


def failover_times(env: Env, count: int) -> list[float]:
    """Kill the leader of task 0 `count` times (it moves each time); seconds until an append to it is acked."""
    times = []
    with hw.LocalCluster(env.directory("w8-failover"), workers=WORKERS) as cluster:
        cluster.deploy(registration, tasks=WORKERS, replication=2)
        depot = cluster.depot("registration", "registrations")
        email = next(f"probe{n}@example.com" for n in range(10_000)
                     if task_for_key(f"probe{n}@example.com", WORKERS) == 0)
        for kill in range(count):
            rows = in_sync(cluster)
            os.kill(rows[0]["pid"], signal.SIGKILL)
            killed_at = time.monotonic()
            while True:
                try:
                    depot.append(UserSignUp(email, "h", kill), idempotency_key=f"probe-{kill}", timeout=10)
                    break
                except (hw.Unavailable, hw.AckTimeout):
                    if time.monotonic() - killed_at > FAILOVER_WAIT_MAX_S:
                        raise RuntimeError(f"no ack {FAILOVER_WAIT_MAX_S}s after the kill") from None
                    time.sleep(0.002)
            times.append(time.monotonic() - killed_at)
            print(f"  w8 failover {kill + 1}: {times[-1]:.3f} s", flush=True)
    return times


def run(env: Env) -> Section:
    ms = int(time.time() * 1000)
    with hw.LocalCluster(env.directory("w8-r1"), workers=WORKERS) as r1, \
            hw.LocalCluster(env.directory("w8-r2"), workers=WORKERS) as r2, \
            hw.LocalCluster(env.directory("w8-one"), workers=1) as one:
        r1.deploy(registration, tasks=WORKERS)
        r2.deploy(registration, tasks=WORKERS, replication=2)
        one.deploy(registration, tasks=WORKERS)
        in_sync(r2)
        depots = {R1: r1.depot("registration", "registrations"), R2: r2.depot("registration", "registrations"),
                  ONE_WORKER: one.depot("registration", "registrations")}

        def maker(system: str) -> Callable[[int, int], Callable[[int], Any]]:
            depot = depots[system]
            return lambda run, n: (lambda i: depot.append(UserSignUp(f"r{run}-c{n}-{i}@x.com", "h", ms)))

        results: dict[tuple[str, int], Measured] = {}
        for run_index, clients, system in alternate(env, [R1, R2, ONE_WORKER]):
            make = maker(system)
            measured = results.setdefault((system, clients), Measured(system, clients))
            measured.runs.append(closed_loop(lambda n, r=run_index, m=make: m(r, n), clients, env.seconds))
            last = measured.runs[-1]
            print(f"  w8 run {run_index + 1} {system:<42} clients={clients:<3} {last.ops_per_s:9,.0f}/s "
                  f"p50 {last.p50_ms:7.3f} ms p99 {last.p99_ms:7.3f} ms", flush=True)
        in_sync = in_sync(r2)
    times = failover_times(env, 4 if env.quick else FAILOVERS)
    measured = list(results.values())
    by = {(m.system, m.clients): m for m in measured}
    rows = []
    for clients in env.clients:
        a, b = by[(R1, clients)], by[(R2, clients)]
        rows.append([str(clients), f"{b.ops_per_s / a.ops_per_s:.2f}×", f"{b.p50_ms - a.p50_ms:+.3f} ms",
                     f"{b.p99_ms - a.p99_ms:+.3f} ms"])
    ordered = sorted(times)
    failover = {"p50_s": statistics.median(times), "max_s": ordered[-1], "min_s": ordered[0], "count": len(times)}
    markdown = "\n\n".join([
        "Full-ack registrations, the ratio columns dividing the replication=1 row by each row.",
        throughput_table(measured, R1, unit="sign-ups/s"),
        "Replication=2 against replication=1 (goals: throughput ≥ 0.6×, p50 at most 1 ms more):",
        table(["clients", "throughput R=2 ÷ R=1", "p50 R=2 − R=1", "p99 R=2 − R=1"], rows),
        f"Failover, from SIGKILL of a leader's worker until a full ack from the new leader "
        f"({failover['count']} kills): p50 {failover['p50_s']:.3f} s, max {failover['max_s']:.3f} s, "
        f"min {failover['min_s']:.3f} s (goal: p50 ≤ 5 s). The followers were in sync at the end of the "
        f"throughput runs: {all(f['in_sync'] for row in in_sync for f in row['followers'])}.",
    ])
    return Section("replication", "8. Replication and failover", markdown,
                   {"measured": [m.summary() for m in measured], "failover_s": times})


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
