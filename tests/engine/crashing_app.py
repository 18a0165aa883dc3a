"""A module and an appender run in a child process that the crash test kills with SIGKILL."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import headwater as hw


@dataclass
class Event:
    id: int
    key: int


def module() -> hw.Module:
    m = hw.Module("crashy")
    events = m.depot("events", Event, partition_by="key")
    seen = m.pstate("seen", hw.Map(int, hw.Map(int, int, subindexed=True)))
    echo = m.pstate("echo", hw.Map(int, int))

    @m.stream(events)
    def handle(ctx: hw.Context, event: Event) -> int:
        ctx.pstate(seen)[event.key][event.id].increment()  # single-task: exactly once
        ctx.hop(event.id, bounce, event.id)  # crosses tasks: at least once
        return event.id

    @m.step
    def bounce(ctx: hw.Context, event_id: int) -> None:
        ctx.pstate(echo)[event_id].increment()

    return m


def main(path: str, run: int) -> None:
    cluster = hw.InProcessCluster(path)
    cluster.deploy(module(), tasks=3)
    depot = cluster.depot("crashy", "events")
    lock = threading.Lock()

    def appender(worker: int) -> None:
        for i in range(100_000):
            event_id = run * 10_000_000 + worker * 1_000_000 + i
            try:
                result = depot.append(Event(event_id, event_id % 7))
            except Exception as e:  # say so on stdout too: the test shows it instead of waiting
                print(f"ERROR {type(e).__name__}: {e}", flush=True)
                raise
            with lock:
                print(f"ACK {event_id} {result.partition} {result.offset}", flush=True)

    for worker in range(4):
        threading.Thread(target=appender, args=(worker,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
