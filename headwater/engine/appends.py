"""Appends to a task's depot partitions: offsets, idempotency keys, and who waits for each record.

`Appends` owns the end offset of each partition, the records just appended (kept in memory,
within bounds, so processing needs no read), and the state of every record an appender may be
waiting for: its replies, and the results its topologies returned so far. A record appended
with an idempotency key keeps an open entry in the store until its last tree completes, so that
after a crash a repeat still waits for processing and gets the same results.
"""

from __future__ import annotations

from typing import Any

import xxhash

from headwater.engine import messages
from headwater.engine.messages import AppendRecord
from headwater.engine.meta import (
    DEPOT_KEY,
    I64,
    IDEM_OPEN_PREFIX,
    U64,
    OpenRecord,
    depot_key,
    idem_key,
    idem_open_key,
    idem_results_key,
    meta_encoder,
    open_record_decoder,
    pending_key,
    start_key,
)
from headwater.engine.rounds import Reply, Round, admitted_bytes
from headwater.engine.runtime import ModuleRuntime
from headwater.storage import Batch, Store

__all__ = ["RECENT_BYTES_MAX", "RECENT_RECORDS_MAX", "Appends", "RecordState", "depot_records", "stored_start"]

# Just-appended records kept in memory so that processing them needs no read, at most this many
# and this many event bytes (big events are read back from the store instead).
RECENT_RECORDS_MAX = 65_536
RECENT_BYTES_MAX = 64 * 1024 * 1024
_OPEN_RECORD_NEW = meta_encoder.encode(OpenRecord())


def stored_start(store: Store, depot_id: int) -> int:
    """The first offset of a depot partition still stored (0 until a retention trimmed it)."""
    raw = store.get("meta", start_key(depot_id))
    return U64.unpack(raw)[0] if raw is not None else 0


def depot_records(store: Store, depot_id: int, start: int, stop: int) -> list[tuple[int, int, bytes]]:
    """(offset, timestamp_us, event) of the stored records of a depot partition in [start, stop)."""
    return [(DEPOT_KEY.unpack(k)[1], I64.unpack(v[:8])[0], v[8:])
            for k, v in store.iterate("depot", depot_key(depot_id, start), depot_key(depot_id, stop))]


class RecordState:
    """A record whose processing an appender may be waiting for: just appended, or, when it was
    appended with an idempotency key, restored after a crash so that a repeat waits for it too."""

    __slots__ = ("depot_id", "done", "errors", "keyed", "offset", "remaining", "replies", "results")

    def __init__(self, depot_id: int, offset: int, remaining: int, keyed: bool,
                 known: OpenRecord | None = None) -> None:
        self.depot_id = depot_id
        self.offset = offset
        self.remaining = remaining  # topologies still processing it
        self.replies: list[Reply] = []
        self.results: dict[str, bytes] = dict(known.results) if known else {}
        self.errors: list[tuple[str, str, str]] = list(known.errors) if known else []
        self.done: list[str] = list(known.done) if known else []  # topologies whose tree completed
        self.keyed = keyed  # its results are kept with the idempotency key, durably


class Appends:
    def __init__(self, runtime: ModuleRuntime, task_id: int, store: Store, round_: Round) -> None:
        self._runtime = runtime
        self._task_id = task_id
        self._store = store
        self._round = round_
        self.ends = {d.depot_id: self.stored_end(d.depot_id) for d in runtime.depots.values() if d.partitions > task_id}
        self._recent: dict[tuple[int, int], list[Any]] = {}  # (depot, offset) -> [timestamp_us, event, readers left]
        self._recent_bytes = 0
        self.records: dict[tuple[int, int], RecordState] = {}
        self._last_timestamp_us = 0
        # External depot -> the timestamp of its last record (its source's times are kept from going back).
        self._last_source_us = {d.depot_id: self._last_timestamp(d.depot_id) for d in runtime.depots.values()
                                if d.decl.source is not None and d.depot_id in self.ends}

    def _last_record(self, depot_id: int) -> tuple[bytes, bytes] | None:
        """The key and stored value of this partition's last record, if it has one."""
        for pair in self._store.iterate("depot", depot_key(depot_id, 0), depot_key(depot_id + 1, 0), reverse=True):
            return pair
        return None

    def _last_timestamp(self, depot_id: int) -> int:
        last = self._last_record(depot_id)
        return int(I64.unpack(last[1][:8])[0]) if last is not None else 0

    def stored_end(self, depot_id: int) -> int:
        last = self._last_record(depot_id)
        if last is not None:
            return int(DEPOT_KEY.unpack(last[0])[1]) + 1
        return stored_start(self._store, depot_id)  # a retention may have trimmed every record: go on from there

    def recover_keyed(self, batch: Batch, cursors: dict[tuple[str, int], int]) -> None:
        """Restore the keyed records a crash left unfinished, so a repeat of one waits for its processing.

        A topology still owes the record its tree if its cursor has not passed the record, or if its
        tree was cut short (a pending entry, resent on recovery); the others completed before the
        crash and their results were kept in the record's open entry.
        """
        for key, value in self._store.iterate("meta", IDEM_OPEN_PREFIX, IDEM_OPEN_PREFIX + b"\xff" * 10):
            depot_id, offset = DEPOT_KEY.unpack(key[len(IDEM_OPEN_PREFIX):])
            known = open_record_decoder.decode(value)
            depot = self._runtime.depots_by_id.get(depot_id)
            owing = [
                stream for stream in (depot.subscribers if depot else [])
                if stream.name not in known.done and (
                    cursors[(stream.name, depot_id)] <= offset
                    or self._store.get("meta", pending_key(stream.name, depot_id, offset)) is not None)
            ]
            record = RecordState(depot_id, offset, len(owing), True, known)
            if owing:
                self.records[(depot_id, offset)] = record
            else:  # its topologies were removed by an update: keep what is known as its results
                batch.put("meta", idem_results_key(depot_id, offset), messages.dumps((record.results, record.errors)))
                batch.delete("meta", key)

    def persist(self, appends: list[AppendRecord], now_us: int, batch: Batch | None = None
                ) -> list[tuple[AppendRecord, int, int]]:
        """Write the appends in one batch (not yet synced), answer repeats of idempotency keys;
        (append, offset, timestamp) of each one appended, for the caller to route. `batch`: what
        must be written atomically with them (an external depot's position), written in any case."""
        now_us = max(now_us, self._last_timestamp_us)
        self._last_timestamp_us = now_us
        stamp = I64.pack(now_us)
        batch = Batch() if batch is None else batch
        accepted: list[tuple[AppendRecord, int, int]] = []
        claimed: dict[bytes, bytes] = {}
        repeats: list[AppendRecord] = []  # answered after the batch is durable, like the first append
        depots = self._runtime.depots_by_id
        for append in appends:
            if append.idempotency_key is not None:
                key = idem_key(append.depot_id, append.idempotency_key)
                if key in claimed or self._store.get("meta", key) is not None:
                    repeats.append(append)
                    continue
            offset = self.ends[append.depot_id]
            self.ends[append.depot_id] = offset + 1
            timestamp_us = self._source_time(append, now_us) if append.source_us else now_us
            if append.depot_id in self._last_source_us:
                self._last_source_us[append.depot_id] = timestamp_us
            batch.put("depot", depot_key(append.depot_id, offset),
                      (stamp if timestamp_us == now_us else I64.pack(timestamp_us)) + append.event)
            if append.idempotency_key is not None:
                key = idem_key(append.depot_id, append.idempotency_key)
                claimed[key] = U64.pack(offset) + xxhash.xxh64_digest(append.event)
                batch.put("meta", key, claimed[key])
                if depots[append.depot_id].subscribers:
                    batch.put("meta", idem_open_key(append.depot_id, offset), _OPEN_RECORD_NEW)
            accepted.append((append, offset, timestamp_us))
        if accepted or len(batch):
            self._store.write(batch, sync=False)
            self._round.unsynced = True  # synced at the end of the round, with the writes of processing them
        for append, offset, timestamp_us in accepted:
            self._track(append, offset, timestamp_us)
        for append in repeats:
            self._repeat(append)
        if self._round.durable_replies:  # Ack.APPEND means durable, not processed: answer before processing
            self._round.answer_durable()
        return accepted

    def _source_time(self, append: AppendRecord, now_us: int) -> int:
        """An external record's timestamp: its source's time, no later than now and no earlier than
        the partition's last record (a partition's timestamps never decrease: age retention and
        readers rely on it)."""
        return min(now_us, max(self._last_source_us[append.depot_id], append.source_us))

    def _track(self, append: AppendRecord, offset: int, timestamp_us: int) -> None:
        depot = self._runtime.depots_by_id[append.depot_id]
        if append.client >= 0:
            self._round.appended(append, offset)
        record = RecordState(append.depot_id, offset, len(depot.subscribers), append.idempotency_key is not None)
        if append.client >= 0:
            record.replies.append(Reply(append.client, append.request, append.ack, admitted_bytes(append)))
        if depot.subscribers:
            self.records[(append.depot_id, offset)] = record
            if len(self._recent) < RECENT_RECORDS_MAX and self._recent_bytes + len(append.event) <= RECENT_BYTES_MAX:
                self._recent[(append.depot_id, offset)] = [timestamp_us, append.event, len(depot.subscribers)]
                self._recent_bytes += len(append.event)
        else:
            self.finish(record)

    def _repeat(self, append: AppendRecord) -> None:
        """Answer an append whose idempotency key was used before, without appending it."""
        stored = self._store.get("meta", idem_key(append.depot_id, append.idempotency_key or ""))
        assert stored is not None
        offset = U64.unpack(stored[:8])[0]
        reply = Reply(append.client, append.request, append.ack, admitted_bytes(append))
        if stored[8:] != xxhash.xxh64_digest(append.event):
            failure = (
                f"idempotency key {append.idempotency_key!r} was first used for a different event "
                f"(partition {append.partition}, offset {offset}); nothing was appended. Use a new key for a new event"
            )
            self._round.complete(reply, append.partition, offset, {}, [], failure=failure, kind="IdempotencyConflict")
            return
        if append.client >= 0:
            self._round.appended(append, offset)
        in_flight = self.records.get((append.depot_id, offset))
        if in_flight is not None:
            in_flight.replies.append(reply)
            return
        results: dict[str, bytes] = {}
        errors: list[tuple[str, str, str]] = []
        saved = self._store.get("meta", idem_results_key(append.depot_id, offset))
        if saved is not None:
            results, errors = messages.loads(saved)
        self._round.complete(reply, append.partition, offset, results, errors)

    def tree_done(self, record: RecordState, topology: str, result: bytes | None,
                  errors: list[tuple[str, str, str]]) -> None:
        """One topology's tree of `record` completed; the record is finished when all have."""
        if not errors and result is not None:
            record.results[topology] = result
        record.errors.extend(errors)
        record.done.append(topology)
        record.remaining -= 1
        if record.remaining == 0:
            self.finish(record)
        elif record.keyed:  # a crash before the others finish must not lose this tree's result
            known = OpenRecord(record.results, record.errors, record.done)
            self._round.batch.put("meta", idem_open_key(record.depot_id, record.offset), meta_encoder.encode(known))

    def finish(self, record: RecordState) -> None:
        self.records.pop((record.depot_id, record.offset), None)
        for reply in record.replies:
            self._round.complete(reply, self._task_id, record.offset, record.results, record.errors)
        if record.keyed:  # kept with the key, in the batch that records the last tree's completion
            saved = messages.dumps((record.results, record.errors))
            self._round.batch.put("meta", idem_results_key(record.depot_id, record.offset), saved)
            self._round.batch.delete("meta", idem_open_key(record.depot_id, record.offset))

    def read(self, depot_id: int, offset: int, *, consume: bool) -> tuple[int, bytes]:
        """(timestamp_us, event) of one record; `consume`: one of its readers is done with it."""
        cached = self._recent.get((depot_id, offset))
        if cached is not None:
            if consume:
                cached[2] -= 1
                if cached[2] == 0:
                    del self._recent[(depot_id, offset)]
                    self._recent_bytes -= len(cached[1])
            return cached[0], cached[1]
        value = self._store.get("depot", depot_key(depot_id, offset))
        assert value is not None, f"depot {depot_id} offset {offset} is below the end but missing"
        return I64.unpack(value[:8])[0], value[8:]

    def read_range(self, depot_id: int, start: int, stop: int) -> list[tuple[int, int, bytes]]:
        """(offset, timestamp_us, event) of the records in [start, stop) of this task's partition."""
        if stop - start == 1:
            return [(start, *self.read(depot_id, start, consume=False))]
        return depot_records(self._store, depot_id, start, stop)
