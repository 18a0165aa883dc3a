"""Workload — a handler that waits 20 ms on an external call: `async def` against blocking.

A stream topology calls a 20 ms "external service" per record (`asyncio.sleep(0.02)` awaited by an
`async def` handler at `max_awaiting=50`, or `time.sleep(0.02)` in a plain handler, which holds its
task), then writes the answer to a PState. Records are appended with `Ack.APPEND` in batches; the
time runs from the first append until every record's write is visible. Measured on
`InProcessCluster` and `LocalCluster` with `--tasks` tasks (goal: async ≥ 20× blocking).

    .venv/bin/python -m bench.async_handlers [--quick]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import headwater as hw
from bench.harness import Env, Section, table

CALL_S = 0.02  # the external call's latency
MAX_AWAITING = 50
APPEND_BATCH = 500
SETTLE_WAIT_MAX_S = 120.0


@dataclass
class Request:
    id: int


def module(awaiting: bool) -> hw.Module:
    m = hw.Module("calls")
    requests = m.depot("requests", Request, partition_by="id")
    answers = m.pstate("answers", hw.Map(int, int))
    done = m.pstate("done", int)  # per task: how many records it answered

    if awaiting:
        @m.stream(requests, max_awaiting=MAX_AWAITING)
        async def call(ctx: hw.Context, request: Request) -> None:
            await asyncio.sleep(CALL_S)
            ctx.pstate(answers)[request.id].set(request.id * 2)
            ctx.pstate(done).increment()  # after the await: read and written in one step
    else:
        @m.stream(requests)
        def call(ctx: hw.Context, request: Request) -> None:
            time.sleep(CALL_S)
            ctx.pstate(answers)[request.id].set(request.id * 2)
            ctx.pstate(done).increment()

    return m


def _measure(cluster: Any, tasks: int, awaiting: bool, records: int) -> float:
    cluster.deploy(module(awaiting), tasks=tasks)
    depot = cluster.depot("calls", "requests")
    done = [cluster.pstate("calls", "done", task=t) for t in range(tasks)]
    started = time.monotonic()
    for start in range(0, records, APPEND_BATCH):
        depot.append_many([Request(i) for i in range(start, min(records, start + APPEND_BATCH))], ack=hw.Ack.APPEND)
    deadline = started + SETTLE_WAIT_MAX_S
    while sum(view.get() or 0 for view in done) < records:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every record was answered within {SETTLE_WAIT_MAX_S} s")
        time.sleep(0.005)
    return records / (time.monotonic() - started)


def run(env: Env) -> Section:
    sync_records = 100 if env.quick else 300
    async_records = 2_000 if env.quick else 6_000
    rows = []
    data: dict[str, Any] = {}
    for kind in ("in_process", "local"):
        rates = {}
        for awaiting, records in ((False, sync_records), (True, async_records)):
            with tempfile.TemporaryDirectory(dir=env.directory("async-handlers")) as path:
                cluster = hw.InProcessCluster(path) if kind == "in_process" else hw.LocalCluster(path, workers=2)
                with cluster:
                    rates[awaiting] = _measure(cluster, env.tasks, awaiting, records)
            print(f"  async handlers: {kind} {'async' if awaiting else 'blocking'}: {rates[awaiting]:,.0f} records/s",
                  flush=True)
        data[kind] = {"blocking": rates[False], "async": rates[True]}
        rows.append([kind, f"{rates[False]:,.0f}", f"{rates[True]:,.0f}", f"{rates[True] / rates[False]:.1f}×"])
    markdown = "\n\n".join([
        f"A stream handler that waits {CALL_S * 1000:.0f} ms on an external call per record, {env.tasks} tasks; "
        f"async at `max_awaiting={MAX_AWAITING}` (per task) against a blocking handler (records/s, goal ≥ 20×):",
        table(["cluster", "blocking", "async", "async ÷ blocking"], rows),
    ])
    return Section("async", "11. Async handlers: a 20 ms external call per record", markdown, data)


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
