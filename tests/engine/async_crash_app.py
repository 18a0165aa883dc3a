"""An async handler module and its appenders, run in a child process that a test kills with SIGKILL
while invocations await."""

from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import dataclass

import headwater as hw


@dataclass
class Event:
    id: int
    key: int


def module() -> hw.Module:
    m = hw.Module("awaity")
    events = m.depot("events", Event, partition_by="key")
    seen = m.pstate("seen", hw.Map(int, hw.Map(int, int, subindexed=True)))
    echo = m.pstate("echo", hw.Map(int, int))

    @m.stream(events, max_awaiting=16)
    async def handle(ctx: hw.Context, event: Event) -> int:
        await asyncio.sleep((event.id * 7919 % 13) / 1000)  # 0-12 ms: they finish out of order
        ctx.pstate(seen)[event.key][event.id].increment()
        ctx.hop(event.id, bounce, event.id)
        return event.id

    @m.step
    async def bounce(ctx: hw.Context, event_id: int) -> None:
        await asyncio.sleep(0.002)
        ctx.pstate(echo)[event_id].increment()

    return m


def main(path: str, run: int) -> None:
    cluster = hw.InProcessCluster(path)
    cluster.deploy(module(), tasks=3)
    depot = cluster.depot("awaity", "events")
    lock = threading.Lock()

    def appender(worker: int) -> None:
        for i in range(100_000):
            event_id = run * 10_000_000 + worker * 1_000_000 + i
            keyed = worker % 2 == 0
            try:
                result = depot.append(Event(event_id, event_id % 7),
                                      idempotency_key=f"e-{event_id}" if keyed else None)
            except Exception as e:  # say so on stdout too: the test shows it instead of waiting
                print(f"ERROR {type(e).__name__}: {e}", flush=True)
                raise
            with lock:
                print(f"ACK {event_id} {result.results.get('handle')}", flush=True)

    def batches(worker: int) -> None:  # many records in flight at once: some finish out of order
        for i in range(0, 100_000, 20):
            ids = [run * 10_000_000 + worker * 1_000_000 + i + j for j in range(20)]
            depot.append_many([Event(event_id, event_id % 7) for event_id in ids], ack=hw.Ack.APPEND)
            with lock:
                for event_id in ids:
                    print(f"ACK {event_id} None", flush=True)

    for worker in range(8):
        threading.Thread(target=appender, args=(worker,), daemon=True).start()
    threading.Thread(target=batches, args=(9,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
