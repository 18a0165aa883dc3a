"""Workload 14 — modules together: what a mirror adds between a depot and another module's topology.

Module `up` has a depot of sign-ups (2 tasks) and a topology that marks each one in a PState;
module `down` (2 tasks, and 3: another task count re-partitions by key) mirrors the depot and
marks each one in its own PState. Measured, in process:

- **latency**: one append (`ack="append"`: durable, not waiting for processing), then until the
  mark is readable, sequentially: by `up`'s own topology, and by `down`'s through the mirror (also
  after a pause, when the mirror's reader has been waiting);
- **throughput**: N sign-ups appended in batches of 1,000, until the last is marked by each.

    .venv/bin/python -m bench.mirrors [--quick]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import headwater as hw
from bench.common import percentile
from bench.harness import Env, Section, table

WAIT_S = 120.0
BATCH = 1_000
IDLE_S = 0.2  # the pause before each of the "after a pause" samples


@dataclass
class SignUp:
    user: str


def upstream() -> hw.Module:
    m = hw.Module("up")
    signups = m.depot("signups", SignUp, partition_by="user")
    seen = m.pstate("seen", hw.Map(str, bool))

    @m.stream(signups)
    def mark(ctx: hw.Context, s: SignUp) -> None:
        ctx.pstate(seen)[s.user].set(True)

    return m


def downstream() -> hw.Module:
    m = hw.Module("down")
    signups = m.mirror_depot("up", "signups")
    seen = m.pstate("seen", hw.Map(str, bool))

    @m.stream(signups)
    def mark(ctx: hw.Context, s: SignUp) -> None:
        ctx.pstate(seen)[s.user].set(True)

    return m


POLL_S = 0.0001  # between reads of the mark: a sleep, so the waiting thread lets the tasks' threads run


def _until(predicate: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {WAIT_S}s")
        time.sleep(POLL_S)


def measure(env: Env, down_tasks: int, samples: int, count: int) -> dict[str, float]:
    with hw.InProcessCluster(env.directory(f"w14-{down_tasks}")) as cluster:
        cluster.deploy(upstream(), tasks=2)
        cluster.deploy(downstream(), tasks=down_tasks)
        depot = cluster.depot("up", "signups")
        views = {"up": cluster.pstate("up", "seen"), "down": cluster.pstate("down", "seen")}
        latencies: dict[str, list[float]] = {"up": [], "down": [], "up_idle": [], "down_idle": []}
        for i in range(samples // 10):  # after a pause: every thread (the mirror's reader too) was waiting
            for side, view in views.items():
                time.sleep(IDLE_S)
                user = f"idle-{side}-{i}"
                started = time.perf_counter()
                depot.append(SignUp(user), ack="append")
                _until(lambda v=view, u=user: v[u].get(False))
                latencies[f"{side}_idle"].append((time.perf_counter() - started) * 1000)
        for i in range(samples):
            for side, view in views.items():  # alternating, so both see the same machine
                user = f"{side}-{i}"
                started = time.perf_counter()
                depot.append(SignUp(user), ack="append")
                _until(lambda v=view, u=user: v[u].get(False))
                latencies[side].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            depot.append_many([SignUp(f"t{first + i}") for i in range(BATCH)], ack="append")
        appended = time.perf_counter() - started
        done = {}
        for side, view in views.items():
            last = [f"t{count - BATCH + i}" for i in range(0, BATCH, 97)]
            _until(lambda v=view, keys=last: all(v[k].get(False) for k in keys))
            done[side] = time.perf_counter() - started
        result = {"appended_s": appended}
        for side in latencies:
            result[f"{side}_p50_ms"] = percentile(latencies[side], 0.50)
            result[f"{side}_p99_ms"] = percentile(latencies[side], 0.99)
        for side in views:
            result[f"{side}_s"] = done[side]
        return result


def run(env: Env) -> Section:
    samples, count = (100, 10_000) if env.quick else (500, 50_000)
    rows, data = [], {}
    for down_tasks in (2, 3):
        found = data[down_tasks] = measure(env, down_tasks, samples, count)
        placement = "same task count" if down_tasks == 2 else "3 tasks: re-partitioned by key"
        rows.append(["own topology (`up`, 2 tasks), after a pause", f"{found['up_idle_p50_ms']:.2f}",
                     f"{found['up_idle_p99_ms']:.2f}", ""])
        rows.append(["own topology (`up`, 2 tasks)", f"{found['up_p50_ms']:.2f}", f"{found['up_p99_ms']:.2f}",
                     f"{count / found['up_s']:,.0f}"])
        rows.append([f"through a mirror (`down`, {placement})", f"{found['down_p50_ms']:.2f}",
                     f"{found['down_p99_ms']:.2f}", f"{count / found['down_s']:,.0f}"])
        rows.append([f"through a mirror (`down`, {placement}), after a pause",
                     f"{found['down_idle_p50_ms']:.2f}", f"{found['down_idle_p99_ms']:.2f}", ""])
        print(f"  w14 down={down_tasks}: own p50 {found['up_p50_ms']:.2f} ms, mirror p50 "
              f"{found['down_p50_ms']:.2f} ms; own {count / found['up_s']:,.0f}/s, mirror "
              f"{count / found['down_s']:,.0f}/s", flush=True)
    markdown = "\n\n".join([
        f"In process; latency over {samples} sequential appends, and {samples // 10} more each after a "
        f"{IDLE_S:g} s pause (`ack=\"append\"`, then until the mark is readable), throughput over "
        f"{count:,} sign-ups appended in batches of {BATCH:,} (until the last batch is marked). Each mirrored "
        "record is written twice (the copy, then the topology's write); the mirror's reader is woken by the "
        "upstream's commits (a watch of each partition's end offset).",
        table(["processed by", "p50 ms", "p99 ms", "sign-ups/s"], rows),
    ])
    return Section("mirrors", "14. Modules together: mirrors", markdown, {str(k): v for k, v in data.items()})


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
