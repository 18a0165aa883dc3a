"""The background half of a PState migration on one task: moving old entries, a few per round.

Reads and writes see a migrating PState as migrated from the first moment (`MigratingLayout`);
this moves what is still stored the old way into the new key space, at most
`MIGRATION_MOVES_PER_ROUND` entries per round so appends and handlers keep their pace, and keeps
its progress in the task's meta column family with each round's batch, so a restart resumes
where the last committed round stopped. A round that also answers appends moves entries only when
the task has had no idle round for `MIGRATION_STARVED_S`, and a message arriving stops the move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from headwater.pstate import Txn
from headwater.pstate.migrating import MigratingLayout
from headwater.storage import Batch, Store

__all__ = ["MIGRATION_BUSY_ROUND_BUDGET_S", "MIGRATION_MOVES_PER_ROUND", "MIGRATION_ROUND_BUDGET_S",
           "MIGRATION_STARVED_S", "MigrationProgress", "Migrations"]

# The rewrite runs in short slices between rounds, because in one process a thread busy with it for
# longer keeps the interpreter lock from the threads that answer appends (a 5 ms slice made a
# full-ack append's p99 five times slower; 0.25 ms keeps it within 2x, at about half the speed).
MIGRATION_MOVES_PER_ROUND = 64  # entries one round moves at most (each read whole, converted, written)
MIGRATION_ROUND_BUDGET_S = 0.00025  # and a round stops moving entries once it spent this long on them...
MIGRATION_BUSY_ROUND_BUDGET_S = 0.00025  # ... or this long, in a round that also handled messages or records,
MIGRATION_STARVED_S = 0.05  # which moves entries only when no round did for this long (its replies wait for it)


class MigrationProgress(msgspec.Struct, array_like=True):
    total: int  # entries in the old space when the migration began on this task
    moved: int = 0  # entries the background moved (writes move others; they count at the end)
    done: bool = False
    after: bytes | None = None  # the last entry the background moved: it goes on from there


_decoder = msgspec.msgpack.Decoder(MigrationProgress)
_encoder = msgspec.msgpack.Encoder()


def progress_key(pstate: str, old_id: int) -> bytes:
    return b"migration/" + pstate.encode() + b"/" + str(old_id).encode()


class Migrations:
    """The migrating PStates of one task, and where each stands."""

    def __init__(self, runtime: Any, store: Store, clock: Any) -> None:
        self._store = store
        self._clock = clock
        self._layouts: dict[str, MigratingLayout] = {
            name: p.layout for name, p in runtime.pstates.items() if isinstance(p.layout, MigratingLayout)}
        self._progress: dict[str, MigrationProgress] = {}
        self._last_step = 0.0  # when a round last moved entries (clock.monotonic)

    @property
    def pending(self) -> bool:
        return any(not p.done for p in self._progress.values())

    def recover(self) -> None:
        """Load each migration's progress; one that never ran here begins (in one synced batch)."""
        batch, txn = Batch(), Txn(self._store.reader("pstate"))
        for name, layout in self._layouts.items():
            key = progress_key(name, layout.old.pstate_id)
            raw = self._store.get("meta", key)
            if raw is not None:
                self._progress[name] = _decoder.decode(raw)
                continue
            progress = self._progress[name] = MigrationProgress(total=layout.begin(txn))
            batch.put("meta", key, _encoder.encode(progress))
        if len(batch) or len(txn):
            from headwater.engine.txns import add_txn_to_batch

            add_txn_to_batch(txn, batch)
            self._store.write(batch, sync=True)

    def step(self, txn: Txn, batch: Batch, *, busy: bool = False,
             interrupted: Callable[[], bool] | None = None) -> bool:
        """Move a bounded number of entries into `txn` (the round's), their progress into `batch`;
        less in a `busy` round, whose replies wait for its end, and none once `interrupted()` says
        messages are waiting. Returns whether any are left."""
        monotonic = self._clock.monotonic
        now = monotonic()
        if busy and now - self._last_step < MIGRATION_STARVED_S:
            return True  # idle rounds do the work; a busy one only when the task is never idle
        self._last_step = now
        deadline = now + (MIGRATION_BUSY_ROUND_BUDGET_S if busy else MIGRATION_ROUND_BUDGET_S)

        def over() -> bool:
            return monotonic() > deadline or (interrupted is not None and interrupted())

        left = False
        for name, progress in self._progress.items():
            if progress.done:
                continue
            layout = self._layouts[name]
            moved, after = layout.move_some(txn, MIGRATION_MOVES_PER_ROUND, after=progress.after, over=over)
            progress.moved = min(progress.total, progress.moved + moved)
            progress.after = after
            more = after is not None
            if not more:
                progress.done = True
                progress.moved = progress.total
            batch.put("meta", progress_key(name, layout.old.pstate_id), _encoder.encode(progress))
            left = left or more
        return left

    def report(self) -> list[dict[str, Any]]:
        """Per migrating PState on this task: its migration ids and progress (from committed state)."""
        rows = []
        for name, layout in self._layouts.items():
            raw = self._store.get("meta", progress_key(name, layout.old.pstate_id))
            progress = _decoder.decode(raw) if raw is not None else MigrationProgress(total=0)
            rows.append({"pstate": name, "total": progress.total, "moved": progress.moved, "done": progress.done})
        return rows
