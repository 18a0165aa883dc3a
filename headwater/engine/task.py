"""One task: owns partition i of every depot and PState of a module and runs its code serially.

The task is passive: a host (`headwater.cluster.hosts`) owns its thread, lock and inbox and
calls `recover`, `begin`, then `run_round` with the messages that arrived, one round at a time;
`serve_read` answers reads of committed state. The task owns its store and reaches other tasks
and clients only through the transport port.

A round: write every append among the messages in one batch; handle hops, acks and microbatch
phases in arrival order; advance each stream topology's cursor over its depot partitions; then
write the round's PState writes and progress in one batch and sync the WAL once for all of it
(group commit) before any reply, hop or ack of the round leaves. Each invocation's PState writes
land in one batch together with the topology's progress, so a restart resumes exactly where
commits stopped.

The parts, split by the state each owns: `Round` (the round's effects and group commit),
`Appends` (offsets, idempotency keys, who waits for each record), `Trees` (processing trees and
their acks), `Streams` (cursors and invocations) and `Reads`. Microbatch participants and the
coordinator see the task through the narrow `BatchHost` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from headwater.engine import messages
from headwater.engine.appends import Appends
from headwater.engine.awaits import AwaitHost
from headwater.engine.context import Context, RecordInfo
from headwater.engine.definitions import Ack, Retry
from headwater.engine.evolution import drop_deleted
from headwater.engine.ingest import Ingest, PollRequest
from headwater.engine.messages import (
    AppendBatch,
    AppendRecord,
    ExternalControl,
    ExternalRecords,
    Hop,
    MbAck,
    MbControl,
    MbDone,
    MbNudge,
    MbPhase,
    MbProcess,
    MirrorForget,
    MirrorProgress,
    Ping,
    Pong,
    Redrive,
    RetryDeadLetter,
    Stop,
    TreeAck,
    TreeRef,
)
from headwater.engine.meta import dead_decoder, dead_key, meta_encoder
from headwater.engine.microbatch import COORDINATOR_TASK, BatchCoordinator, BatchParticipant
from headwater.engine.migrations import Migrations
from headwater.engine.mirrors import forget_consumer, record_consumer
from headwater.engine.reads import Reads
from headwater.engine.resources import TaskResources
from headwater.engine.retention import RETENTION_CHECK_S, Trimmer
from headwater.engine.rounds import Reply, Round, UniqueIds
from headwater.engine.runtime import ModuleRuntime
from headwater.engine.streams import Outcome, Streams
from headwater.engine.transport import Clock, Transport
from headwater.engine.trees import Trees
from headwater.pstate import Txn
from headwater.storage import Batch, Store

__all__ = ["INBOX_DRAIN_MAX", "RoundOutcome", "Task"]

_log = logging.getLogger("headwater.task")

INBOX_DRAIN_MAX = 512  # messages a host hands one round
_FULL = Ack.FULL.value


class RoundOutcome:
    """What a host needs to know after a round: whether to stop, and when to run the next one."""

    __slots__ = ("backlog", "background", "congested", "held_bytes", "stopping", "wake_in_s")

    def __init__(self, stopping: bool, backlog: bool, congested: bool, background: bool = False,
                 held_bytes: int = 0, wake_in_s: float | None = None) -> None:
        self.stopping = stopping  # a Stop message was taken: run no more rounds
        self.backlog = backlog  # records or replays are left: run another round without waiting
        self.congested = congested  # the module's inboxes are full: look again soon, not at once
        # Background work is left (a migration's rewrite): run another round soon, after letting
        # other threads in (a host pauses briefly, unless a message arrives meanwhile).
        self.background = background
        # Bytes of hops the task took and holds until a slot of their async topology frees up: the
        # host counts them as its inbox's, so senders back off (the bound on fan-out holds them too).
        self.held_bytes = held_bytes
        # Run a round within this many seconds even if no message comes (timed work: retention).
        self.wake_in_s = wake_in_s


class Task:
    def __init__(self, runtime: ModuleRuntime, task_id: int, store: Store, transport: Transport, clock: Clock) -> None:
        self.runtime = runtime
        self.task_id = task_id
        self.store = store
        self.transport = transport
        self.clock = clock
        self.pstate_reader = store.reader("pstate")
        # Built and closed by the host (`open_resources`, `close_resources`), around the rounds.
        self.resources = TaskResources(runtime.name, runtime.resources, task_id)
        self._unique = UniqueIds(store, task_id)
        self._round = Round(store, transport, task_id, self._unique)
        self._appends = Appends(runtime, task_id, store, self._round)
        self._trees = Trees(task_id, self._round, self._appends)
        self._streams = Streams(runtime, task_id, store, transport, clock, self._round, self._appends, self._trees,
                                self._unique, self.resources)
        self._ingest = Ingest(runtime, task_id, store, self._backlog)
        self._participants = {name: BatchParticipant(self, decl) for name, decl in runtime.microbatches.items()}
        self._coordinators = (
            {name: BatchCoordinator(self, decl) for name, decl in runtime.microbatches.items()}
            if task_id == COORDINATOR_TASK else {}
        )
        self._migrations = Migrations(runtime, store, clock, task_id)
        self._trimmer = Trimmer(runtime, task_id, store, clock)
        self._reads = Reads(runtime, task_id, store, transport, self._coordinators, self._streams,
                            self._appends.stored_end, self.resources, self._migrations.report)

    # ---- lifecycle ------------------------------------------------------------------------
    def recover(self) -> None:
        """Drop what an update deleted, set each topology's cursor from stored progress, and queue
        what a crash cut short."""
        drop_deleted(self.store, self.runtime.catalog)
        self._migrations.recover()
        batch = Batch()
        self._streams.recover(batch)
        self._appends.recover_keyed(batch, self._streams.cursors)
        for name, participant in self._participants.items():
            participant.recover(batch, self._streams.initial_cursor)
            prefix = b"mb/" + name.encode() + b"/appends/"
            for pending, outbox in self.store.iterate("meta", prefix, prefix + b"\xff"):
                self._streams.queue_resend(name, pending, -1, outbox)
        if len(batch):
            self.store.write(batch, sync=True)

    def begin(self) -> None:
        """The first round, before any message: microbatch coordinators start, recovery's sends leave."""
        for coordinator in self._coordinators.values():
            coordinator.start()
        self._round.end()

    def await_with(self, host: AwaitHost) -> None:
        """Run the awaits of `async def` handlers and steps on `host` (which drives an event loop)."""
        self._streams.await_host = host

    def close(self) -> None:
        """The host stopped running rounds: give back what the task holds outside itself."""
        for coordinator in self._coordinators.values():
            coordinator.release()  # never leave queries waiting on a commit that will not finish

    # ---- rounds ---------------------------------------------------------------------------
    def run_round(self, batch: list[bytes], waiting: Callable[[], bool] | None = None) -> RoundOutcome:
        """Handle `batch` (at most INBOX_DRAIN_MAX messages, in arrival order), advance the topologies,
        and commit: everything the round sends leaves only after its writes are durable."""
        decoded, stopping = self._decode(batch)
        self._handle(decoded)
        backlog = self._streams.pump()
        background = False
        if self._trimmer.due():  # a depot's retention: what may go goes in this round's batch
            self._trimmer.trim(self._round.batch, self._appends.ends)
        if self._migrations.pending:  # a bounded part of a PState migration, in this round's batch
            background = self._migrations.step(self._round.txn, self._round.batch, busy=bool(batch) or backlog,
                                               interrupted=waiting)
        self._round.end()
        self._trimmer.compact()
        wake = RETENTION_CHECK_S if self._trimmer.active else None
        return RoundOutcome(stopping, backlog, self._streams.congested, background, self._streams.held_bytes,
                            wake)

    @staticmethod
    def _decode(batch: list[bytes]) -> tuple[list[Any], bool]:
        """The messages before a Stop, if any, and whether Stop was among them. A message that does
        not decode is dropped and logged: a bad sender must not stop the task."""
        decoded: list[Any] = []
        for data in batch:
            try:
                message = messages.decode(data)
            except (msgspec.DecodeError, TypeError) as e:
                _log.error("dropped a message that is not an encoded headwater message (%s: %s): %r",
                           type(e).__name__, e, data[:64])
                continue
            if isinstance(message, Stop):
                return decoded, True
            decoded.append(message)
        return decoded, False

    def _handle(self, batch: list[Any]) -> None:
        appends: list[AppendRecord] = []
        others = False
        for message in batch:
            kind = type(message)
            if kind is AppendRecord:
                if message.client < 0 or self._admit([message]):  # a topology's append is part of a tree
                    appends.append(message)
            elif kind is AppendBatch:
                if self._admit(message.records):
                    appends.extend(message.records)
            else:
                others = True
        if appends:
            self._persist(appends)
        if not others:
            return
        for message in batch:
            if type(message) in (AppendRecord, AppendBatch):
                continue
            if isinstance(message, Hop):
                participant = self._participants.get(message.topology)
                if participant is not None:
                    participant.on_hop(message)
                else:
                    self._streams.run_hop(message)
            elif isinstance(message, TreeAck):
                self._trees.on_ack(message)
            elif isinstance(message, RetryDeadLetter):
                self._retry_dead_letter(message)
            elif isinstance(message, (MbProcess, MbPhase)):
                participant = self._participants[message.topology]
                participant.on_process(message) if isinstance(message, MbProcess) else participant.on_phase(message)
            elif isinstance(message, (MbAck, MbDone, MbNudge, MbControl)):
                self._coordinate(message)
            elif isinstance(message, Redrive):
                self._redrive(message)
            elif isinstance(message, ExternalRecords):
                self._ingest.on_records(message, self._persist)
            elif isinstance(message, ExternalControl):
                changed = self._ingest.on_control(message)
                if changed is not None:
                    self.store.write(changed, sync=True)
            elif isinstance(message, MirrorProgress):
                record_consumer(self._round.batch, message.depot_id, message.consumer, message.next_offset)
            elif isinstance(message, MirrorForget):
                forget_consumer(self.store, self._round.batch, message.consumer)
            elif isinstance(message, Ping):
                admission = self._round.admission
                pong = Pong(message.request, self.task_id, admission.count, admission.size_bytes)
                self._round.replies.append((message.client, messages.encode(pong)))

    def _redrive(self, message: Redrive) -> None:
        _log.info("task %d of %s sends its unfinished trees again: %s", self.task_id, self.runtime.name,
                  message.reason)
        self._trees.redrive(lambda key: self.store.get("meta", key))
        for coordinator in self._coordinators.values():
            coordinator.redrive()

    def _admit(self, records: list[AppendRecord]) -> bool:
        """Take client appends (one message's) in flight, or answer each Busy if they do not fit."""
        if self._round.admission.admit(len(records), sum(len(r.event) for r in records)):
            return True
        for record in records:
            self._round.busy(record)
        return False

    def _persist(self, appends: list[AppendRecord], batch: Batch | None = None) -> None:
        for append, _, _ in self._appends.persist(appends, self.clock.time_us(), batch):
            for batched in self.runtime.depots_by_id[append.depot_id].microbatches:
                self._participants[batched.name].nudge_if_new(append.depot_id)
            if append.tree is not None:  # a topology's ctx.append: that tree waited for this
                self._trees.send_ack(TreeAck(append.tree, append.invocation))

    def _coordinate(self, message: Any) -> None:
        coordinator = self._coordinators[message.topology]
        if isinstance(message, MbAck):
            coordinator.on_ack(message)
        elif isinstance(message, MbDone):
            coordinator.on_done(message)
        elif isinstance(message, MbNudge):
            coordinator.on_nudge()
        elif isinstance(message, MbControl):
            coordinator.on_control(message.action)

    def _retry_dead_letter(self, message: RetryDeadLetter) -> None:
        reply = Reply(message.client, message.request, _FULL, None)
        stored = self.store.get("meta", dead_key(message.topology, message.dead_letter_id))
        if stored is None:
            failure = (f"dead letter {message.dead_letter_id} of topology {message.topology!r} is gone "
                       "(already retried?)")
            self._round.complete(reply, self.task_id, -1, {}, [], failure=failure, kind="NotFound")
            return
        entry = dead_decoder.decode(stored)
        participant = self._participants.get(entry.topology)
        if participant is not None:
            participant.retry(entry, reply)
        else:
            self._streams.retry_dead_letter(entry, reply)

    # ---- external depots: what the host polls ----------------------------------------------
    def take_polls(self) -> list[PollRequest]:
        """The reads of external sources the host should make now (after `begin` and each round,
        whose writes are durable by then): one outstanding per source partition."""
        return self._ingest.take_polls() if self._ingest.partitions else []

    def _backlog(self, depot: Any) -> int:
        """Records of `depot`'s partition here that its stream topologies have not processed yet."""
        end = self._appends.ends[depot.depot_id]
        cursors = [self._streams.cursors.get((stream.name, depot.depot_id), end) for stream in depot.subscribers]
        return end - min(cursors, default=end)

    # ---- reads of committed state (served in the caller's thread in process) -------------
    def serve_read(self, request: tuple[Any, ...]) -> Any:
        if request[0] == "external":  # status(): each external depot partition's position, lag, pause
            return self._ingest.describe()
        return self._reads.serve(request)

    # ---- BatchHost: what microbatch participants and coordinators use ---------------------
    def answer(self, reply: Reply, *, errors: list[tuple[str, str, str]] | None = None) -> None:
        """Tell a waiting client its request finished (a retried microbatch dead letter)."""
        self._round.complete(reply, self.task_id, -1, {}, errors or [])

    @staticmethod
    def new_txn(reader: Any) -> Txn:
        return Txn(reader)

    def send(self, task_id: int, data: bytes) -> None:
        """Send once this round commits."""
        self._round.send(task_id, data)

    def depot_end(self, depot_id: int) -> int:
        return self._appends.ends[depot_id]

    def read_records(self, depot_id: int, start: int, stop: int) -> list[tuple[int, int, bytes]]:
        """(offset, timestamp_us, event) of the records in [start, stop) of this task's partition."""
        return self._appends.read_range(depot_id, start, stop)

    def invoke(self, topology: str, tree: TreeRef, info: RecordInfo, call: Callable[[Context], Any], retry: Retry,
               *, base: Any = None, deferred: bool = False, depth: int = 0) -> Outcome:
        return self._streams.invoke(topology, tree, info, call, retry, base=base, deferred=deferred, depth=depth)

    @staticmethod
    def encode_outbox(outbox: list[tuple[int, bytes]]) -> bytes:
        return meta_encoder.encode(outbox)

    def resend(self, topology: str, pending_key: bytes, offset: int, outbox: bytes) -> None:
        self._trees.resend(topology, pending_key, offset, outbox)

    def next_unique_id(self) -> int:
        return self._unique.next()
