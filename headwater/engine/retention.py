"""Retention: trimming a depot partition's oldest records, never one still owed processing.

`module.depot(name, T, retention=hw.Retention(max_records=..., max_age_s=...))` keeps at most
`max_records` records per partition, and none older than `max_age_s`, except that a record is
never trimmed while a topology subscribed to the depot has not processed it (its committed
progress has not passed it), while its tree is unfinished, while it is a dead letter (a retry
reads it), or while a mirror in another module has not copied it. Every `RETENTION_CHECK_S`
the task deletes what may go, in its round's batch with the partition's new start offset; past
`RETENTION_COMPACT_RECORDS` trimmed records it asks the store to compact the trimmed range, so
the disk space is given back, not just marked deleted.
"""

from __future__ import annotations

from typing import Any

from headwater.engine.meta import DEPOT_KEY, I64, U64, dead_decoder, depot_key, start_key
from headwater.engine.mirrors import consumer_floor
from headwater.storage import Batch, Store

__all__ = ["RETENTION_CHECK_S", "RETENTION_COMPACT_RECORDS", "RETENTION_SCAN_MAX", "Trimmer"]

RETENTION_CHECK_S = 1.0  # how often a task looks for records to trim
RETENTION_SCAN_MAX = 100_000  # records a check reads at most to find the first young enough one
RETENTION_COMPACT_RECORDS = 10_000  # trimmed records that make the task compact the range they held


class Trimmer:
    """The depots with a retention on one task, and where each partition starts."""

    def __init__(self, runtime: Any, task_id: int, store: Store, clock: Any) -> None:
        self._store = store
        self._clock = clock
        self._depots = [d for d in runtime.depots.values() if d.decl.retention is not None and task_id < d.partitions]
        self._topologies = {d.depot_id: [*d.subscribers, *d.microbatches] for d in self._depots}
        self._last_check = 0.0
        self._trimmed_since_compaction = {d.depot_id: 0 for d in self._depots}

    @property
    def active(self) -> bool:
        return bool(self._depots)

    def due(self) -> bool:
        return bool(self._depots) and self._clock.monotonic() - self._last_check >= RETENTION_CHECK_S

    def trim(self, batch: Batch, ends: dict[int, int]) -> None:
        """Trim every depot of this task as far as its retention and its readers allow."""
        self._last_check = self._clock.monotonic()
        for depot in self._depots:
            start = _stored_start(self._store, depot.depot_id)
            end = ends.get(depot.depot_id, start)
            target = self._target(depot, start, end)
            keep = min(target, self._owed(depot, end))
            if keep <= start:
                continue
            batch.delete_range("depot", depot_key(depot.depot_id, start), depot_key(depot.depot_id, keep))
            batch.put("meta", start_key(depot.depot_id), U64.pack(keep))
            self._trimmed_since_compaction[depot.depot_id] += keep - start

    def compact(self) -> None:
        """Give back the disk space of large trims (after the round that made them is written)."""
        for depot in self._depots:
            if self._trimmed_since_compaction[depot.depot_id] >= RETENTION_COMPACT_RECORDS:
                self._trimmed_since_compaction[depot.depot_id] = 0
                self._store.compact("depot", depot_key(depot.depot_id, 0), depot_key(depot.depot_id + 1, 0))

    def _target(self, depot: Any, start: int, end: int) -> int:
        """Where the retention alone would start the partition."""
        retention = depot.decl.retention
        target = end
        if retention.max_records is not None:
            target = min(target, max(start, end - retention.max_records))
        if retention.max_age_s is not None:
            oldest_us = self._clock.time_us() - int(retention.max_age_s * 1_000_000)
            young = start
            for key, value in self._store.iterate("depot", depot_key(depot.depot_id, start),
                                                  depot_key(depot.depot_id, min(end, start + RETENTION_SCAN_MAX))):
                if I64.unpack(value[:8])[0] >= oldest_us:
                    break
                young = DEPOT_KEY.unpack(key)[1] + 1
            target = min(target, young)
        return target

    def _owed(self, depot: Any, end: int) -> int:
        """The first record of the partition some topology, or some mirror, still owes processing (or `end`)."""
        owed = consumer_floor(self._store, depot.depot_id, end)
        tag = DEPOT_KEY.pack(depot.depot_id, 0)[:2]
        for topology in self._topologies[depot.depot_id]:
            raw = self._store.get("meta", b"progress/" + topology.name.encode() + b"/" + tag)
            owed = min(owed, U64.unpack(raw)[0] if raw is not None else 0)
            prefix = b"pending/" + topology.name.encode() + b"/" + tag
            for key, _ in self._store.iterate("meta", prefix, prefix + b"\xff" * 8):
                owed = min(owed, DEPOT_KEY.unpack(key[-10:])[1])
                break  # pending keys sort by offset: the first is the oldest
            dead_prefix = b"dead/" + topology.name.encode() + b"/"
            for _, value in self._store.iterate("meta", dead_prefix, dead_prefix + b"\xff" * 9):
                letter = dead_decoder.decode(value)
                if letter.depot == depot.name:
                    owed = min(owed, letter.offset)
        return owed


def _stored_start(store: Store, depot_id: int) -> int:
    raw = store.get("meta", start_key(depot_id))
    return U64.unpack(raw)[0] if raw is not None else 0
