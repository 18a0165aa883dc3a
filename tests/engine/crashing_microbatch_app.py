"""A microbatch module with injected faults, run in a child process that crashes mid-stream."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import headwater as hw
from headwater.engine import microbatch


@dataclass
class Move:
    id: int
    src: int
    dst: int
    amount: int


ACCOUNTS = 11


def module() -> hw.Module:
    m = hw.Module("oracle")
    moves = m.depot("moves", Move)
    balance = m.pstate("balance", hw.Map(int, int))
    applied = m.pstate("applied", hw.Map(int, int))
    failed_once: set[int] = set()

    @m.microbatch(moves)
    def settle(ctx: hw.Context, move: Move) -> None:
        if move.id % 17 == 0 and move.id not in failed_once:  # a fault on the first try of some records
            failed_once.add(move.id)
            raise ConnectionError(f"injected fault for move {move.id}")
        ctx.hop(move.src, adjust, move.src, -move.amount)
        ctx.hop(move.dst, adjust, move.dst, move.amount)
        ctx.hop(move.id, mark, move.id)

    @m.step
    def adjust(ctx: hw.Context, account: int, delta: int) -> None:
        ctx.pstate(balance)[account].increment(delta)

    @m.step
    def mark(ctx: hw.Context, move_id: int) -> None:
        if move_id % 23 == 0 and -move_id not in failed_once:  # and a fault in a hop, once
            failed_once.add(-move_id)
            raise ConnectionError(f"injected fault in a hop of move {move_id}")
        ctx.pstate(applied)[move_id].increment()

    return m


def crash_between_task_commits(after_batches: int) -> None:
    """Exit the process right after task 1 applied a batch, before the coordinator hears of it."""
    original = microbatch.BatchParticipant._apply
    applied = {"count": 0}

    def apply_then_die(self: microbatch.BatchParticipant, batch_number: int) -> None:
        original(self, batch_number)
        if self.task.task_id == 1:
            applied["count"] += 1
            if applied["count"] >= after_batches:
                os._exit(0)

    microbatch.BatchParticipant._apply = apply_then_die  # type: ignore[method-assign]


def main(path: str, run: int, crash_between: bool) -> None:
    if crash_between:
        crash_between_task_commits(after_batches=3)
    cluster = hw.InProcessCluster(path)
    cluster.deploy(module(), tasks=3)
    depot = cluster.depot("oracle", "moves")
    lock = threading.Lock()

    def appender(worker: int) -> None:
        for i in range(1_000_000):
            move_id = run * 10_000_000 + worker * 1_000_000 + i
            try:
                depot.append(Move(move_id, move_id % ACCOUNTS, (move_id * 7 + 3) % ACCOUNTS, 1 + move_id % 5), ack="append")
            except Exception as e:  # say so on stdout too: the test shows it instead of waiting
                print(f"ERROR {type(e).__name__}: {e}", flush=True)
                raise
            with lock:
                print(f"ACK {move_id}", flush=True)

    for worker in range(3):
        threading.Thread(target=appender, args=(worker,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "between")
