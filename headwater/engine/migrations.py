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

from headwater.engine.meta import DEPOT_KEY, depot_key
from headwater.engine.txns import add_txn_to_batch
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


class _PStateJob:
    """Moving a migrating PState's entries into its new key space."""

    kind = "pstate"

    def __init__(self, name: str, layout: MigratingLayout) -> None:
        self.name, self.layout = name, layout
        self.key = b"migration/" + name.encode() + b"/" + str(layout.old.pstate_id).encode()

    def begin(self, txn: Txn, batch: Batch) -> int:
        return self.layout.begin(txn)

    def step(self, txn: Txn, batch: Batch, progress: MigrationProgress, over: Callable[[], bool]) -> int:
        moved, progress.after = self.layout.move_some(txn, MIGRATION_MOVES_PER_ROUND, after=progress.after,
                                                      over=over)
        progress.done = progress.after is None
        return moved


class _DepotJob:
    """Rewriting a depot partition's events stored with the previous event version."""

    kind = "depot"

    def __init__(self, name: str, depot: Any, store: Store) -> None:
        self.name, self.depot, self._store = name, depot, store
        self.key = b"migration/depot/" + name.encode() + b"/" + str(depot.codec.version).encode()

    def begin(self, txn: Txn, batch: Batch) -> int:
        """The events to rewrite: those below the partition's end now (later ones are new)."""
        last = next(iter(self._store.iterate("depot", depot_key(self.depot.depot_id, 0),
                                             depot_key(self.depot.depot_id + 1, 0), reverse=True)), None)
        return 0 if last is None else DEPOT_KEY.unpack(last[0])[1] + 1

    def step(self, txn: Txn, batch: Batch, progress: MigrationProgress, over: Callable[[], bool]) -> int:
        depot_id, codec = self.depot.depot_id, self.depot.codec
        start, rewritten = progress.moved, 0
        stop = depot_key(depot_id, progress.total)
        for key, value in self._store.iterate("depot", depot_key(depot_id, start), stop):
            if rewritten == MIGRATION_MOVES_PER_ROUND or (rewritten and over()):
                break
            current = codec.upgraded(value[8:])
            if current is not None:
                batch.put("depot", key, value[:8] + current)
            rewritten += 1
            progress.moved = DEPOT_KEY.unpack(key)[1] + 1
        else:
            progress.moved = progress.total
        progress.done = progress.moved >= progress.total
        return progress.moved - start


class Migrations:
    """The migrations running on one task (PStates moving to a new schema, depot events to a new
    type), and where each stands."""

    def __init__(self, runtime: Any, store: Store, clock: Any, task_id: int) -> None:
        self._store = store
        self._clock = clock
        self._jobs: list[_PStateJob | _DepotJob] = [
            _PStateJob(name, p.layout) for name, p in runtime.pstates.items() if isinstance(p.layout, MigratingLayout)]
        self._jobs += [_DepotJob(name, depot, store) for name, depot in runtime.depots.items()
                       if name in runtime.catalog.depot_migrations and task_id < depot.partitions]
        self._progress: dict[bytes, MigrationProgress] = {}
        self._last_step = 0.0  # when a round last moved entries (clock.monotonic)

    @property
    def pending(self) -> bool:
        return any(not p.done for p in self._progress.values())

    def recover(self) -> None:
        """Load each migration's progress; one that never ran here begins (in one synced batch)."""
        batch, txn = Batch(), Txn(self._store.reader("pstate"))
        for job in self._jobs:
            raw = self._store.get("meta", job.key)
            if raw is not None:
                self._progress[job.key] = _decoder.decode(raw)
                continue
            progress = self._progress[job.key] = MigrationProgress(total=job.begin(txn, batch))
            progress.done = progress.total == 0 and job.kind == "depot"
            batch.put("meta", job.key, _encoder.encode(progress))
        if len(batch) or len(txn):
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
        for job in self._jobs:
            progress = self._progress[job.key]
            if progress.done:
                continue
            moved = job.step(txn, batch, progress, over)
            if job.kind == "pstate":
                progress.moved = progress.total if progress.done else min(progress.total, progress.moved + moved)
            batch.put("meta", job.key, _encoder.encode(progress))
            left = left or not progress.done
        return left

    def report(self) -> list[dict[str, Any]]:
        """Per migration on this task: what it migrates and its progress (from committed state)."""
        rows = []
        for job in self._jobs:
            raw = self._store.get("meta", job.key)
            progress = _decoder.decode(raw) if raw is not None else MigrationProgress(total=0)
            rows.append({"kind": job.kind, "name": job.name, "total": progress.total, "moved": progress.moved,
                         "done": progress.done})
        return rows
