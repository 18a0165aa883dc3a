"""External depots on one task: the position ingested from each source partition, stored atomically
with the records, and the polls the task asks of its host.

The task never reads a source. Its host polls one `SourceReader` per partition when the task asks
(`take_polls`: the position to read after), and hands back what it read as an `ExternalRecords`
message. The task appends the events and stores their position in the same write batch, so a
crash anywhere leaves either both or neither: the next poll, from the stored position, neither
skips nor repeats a record. It asks for the next batch only once that write is durable (the polls
are taken after the round commits), and not while the depot's stream topologies are more than
`EXTERNAL_BACKLOG_RECORDS_MAX` records behind, so an external log with a large backlog fills the
depot at the pace the task processes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from headwater.engine.messages import AppendRecord, ExternalControl, ExternalRecords
from headwater.engine.runtime import DepotRuntime, ModuleRuntime
from headwater.storage import Batch, Store

__all__ = ["EXTERNAL_BACKLOG_RECORDS_MAX", "Ingest", "PollRequest"]

_log = logging.getLogger("headwater.ingest")

# No poll is asked while the depot's stream topologies have more than this many records to process.
EXTERNAL_BACKLOG_RECORDS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class PollRequest:
    """What the host's poller of one partition should read: the events after `after` (msgpack, or None)."""

    depot: DepotRuntime
    partition: int
    after: bytes | None
    lag_only: bool = False  # paused: only measure how far the source is ahead, read nothing


class _Partition:
    __slots__ = ("depot", "partition", "position", "paused", "polling", "lag", "error", "ingested")

    def __init__(self, depot: DepotRuntime, partition: int, position: bytes | None, paused: bool) -> None:
        self.depot = depot
        self.partition = partition
        self.position = position  # msgpack of the source position of the last record ingested
        self.paused = paused
        self.polling = False  # a poll was asked and not answered
        self.lag: int | None = None
        self.error: str | None = None
        self.ingested = 0  # records appended since the task started


def position_key(depot_id: int) -> bytes:
    return b"external/" + depot_id.to_bytes(2, "big") + b"/position"


def paused_key(depot_id: int) -> bytes:
    return b"external/" + depot_id.to_bytes(2, "big") + b"/paused"


class Ingest:
    """The external depot partitions this task owns: their positions, pauses and polls."""

    def __init__(self, runtime: ModuleRuntime, task_id: int, store: Store, backlog: Any) -> None:
        self._store = store
        self._backlog = backlog  # depot -> records its stream topologies have still to process here
        self.partitions: dict[int, _Partition] = {}
        for depot in runtime.depots.values():
            if depot.decl.source is None or depot.partitions <= task_id:
                continue
            position = store.get("meta", position_key(depot.depot_id))
            paused = store.get("meta", paused_key(depot.depot_id)) == b"1"
            self.partitions[depot.depot_id] = _Partition(depot, task_id, position, paused)

    def on_records(self, message: ExternalRecords, persist: Any) -> None:
        """A poll's answer: append its events with their position in one batch (`persist`), if it
        answers the position stored now."""
        state = self.partitions.get(message.depot_id)
        if state is None:
            return
        if message.after != state.position:
            return  # stale: read after a position this task has moved past (a poll from before a pause)
        state.polling = False
        if message.lag >= 0:
            state.lag = message.lag
        if message.error is not None:
            state.error = message.error
            return
        state.error = None
        if not message.events and message.position == state.position:
            return  # nothing new: nothing to write
        if state.paused or message.position is None:
            return  # paused meanwhile: what was read is read again after resume, from the same position
        batch = Batch()
        batch.put("meta", position_key(message.depot_id), message.position)
        times = message.times or [0] * len(message.events)
        records = [AppendRecord(message.depot_id, message.partition, event, "none", source_us=time_us)
                   for event, time_us in zip(message.events, times, strict=True)]
        persist(records, batch)
        state.position = message.position
        state.ingested += len(records)

    def on_control(self, message: ExternalControl) -> Batch | None:
        """Pause or resume one external depot here; the batch that stores it, if it changed."""
        state = self.partitions.get(message.depot_id)
        if state is None or state.paused == (message.action == "pause"):
            return None
        state.paused = message.action == "pause"
        state.polling = False  # a poll of the other kind may be outstanding: its answer is checked as any
        batch = Batch()
        if state.paused:
            batch.put("meta", paused_key(message.depot_id), b"1")
        else:
            batch.delete("meta", paused_key(message.depot_id))
        return batch

    def take_polls(self) -> list[PollRequest]:
        """The polls to ask the host for now (each partition has at most one outstanding)."""
        polls = []
        for state in self.partitions.values():
            if state.polling or (not state.paused and self._backlog(state.depot) > EXTERNAL_BACKLOG_RECORDS_MAX):
                continue
            state.polling = True
            polls.append(PollRequest(state.depot, state.partition, state.position, lag_only=state.paused))
        return polls

    def describe(self) -> dict[str, dict[str, Any]]:
        """For status(): each external depot partition here, by depot name."""
        return {
            state.depot.name: {
                "partition": state.partition,
                "source": state.depot.decl.source.describe(),
                "position": _shown(state.position),
                "paused": state.paused,
                "lag": state.lag,
                "lag_unit": state.depot.decl.source.lag_unit,
                "ingested": state.ingested,
                "error": state.error,
            }
            for state in self.partitions.values()
        }


def _shown(position: bytes | None) -> Any:
    if position is None:
        return None
    try:
        return msgspec.msgpack.decode(position)
    except msgspec.DecodeError:
        return repr(position)
