"""One task: owns partition i of every depot and PState of a module and runs its code serially.

The task is passive: a host (`headwater.cluster.hosts`) owns its thread, lock and inbox and
calls `recover`, `begin`, then `run_round` with the messages that arrived, one round at a time.
The task owns its store and reaches other tasks and clients only through the transport port.
A round: take the messages;
write every drained append in one batch; handle hops and acks in arrival order; advance each
stream topology's cursor over its depot partitions; then write the round's PState writes and
progress in one batch and sync the WAL once for all of it (group commit) before any reply, hop
or ack of the round leaves. Each invocation's PState writes land in one batch together with the
topology's progress, so a restart resumes exactly where commits stopped."""

from __future__ import annotations

import logging
import traceback
from collections import deque
from datetime import datetime
from typing import Any, Callable

import xxhash

from headwater.engine.transport import Clock, Transport
from headwater.engine import messages
from headwater.engine.context import FINISHED, Context, Invocation, RecordInfo, TaskViews, TxnSlot, invocation_id
from headwater.engine.definitions import Ack, Retry, StreamDecl
from headwater.engine.messages import (
    AppendRecord,
    Completed,
    Hop,
    MbAck,
    MbControl,
    MbDone,
    MbNudge,
    MbPhase,
    MbProcess,
    RetryDeadLetter,
    Stop,
    TreeAck,
    TreeRef,
)
from headwater.engine.microbatch import COORDINATOR_TASK, BatchCoordinator, BatchParticipant
from headwater.engine.meta import (
    DEPOT_KEY,
    I64,
    IDEM_OPEN_PREFIX,
    U64,
    UNIQUE_KEY,
    DeadLetterEntry,
    OpenRecord,
    PendingTree,
    dead_decoder,
    dead_key,
    decode_pending,
    depot_key,
    idem_key,
    idem_open_key,
    idem_results_key,
    meta_encoder,
    open_record_decoder,
    pending_key,
    progress_key,
)
from headwater.engine.runtime import DepotRuntime, ModuleRuntime
from headwater.engine.txns import add_txn_to_batch
from headwater.pstate import Txn
from headwater.errors import HeadwaterError, NotFound
from headwater.storage import Batch, Store

__all__ = ["INBOX_DRAIN_MAX", "RoundOutcome", "Task"]

_log = logging.getLogger("headwater.task")

INBOX_DRAIN_MAX = 512  # messages a host hands one round
PUMP_RECORDS_MAX = 256  # records processed per loop turn before the inbox is looked at again
PUMP_TIME_MAX_S = 0.02  # ... or this much time, so new appends are made durable while handlers are slow
# Just-appended records kept in memory so that processing them needs no read, at most this many
# and this many event bytes (big events are read back from the store instead).
RECENT_RECORDS_MAX = 65_536
RECENT_BYTES_MAX = 64 * 1024 * 1024
ROUND_SEND_BYTES_MAX = 16 * 1024 * 1024  # a round starts no more records once its handlers sent this much
_FULL, _NONE = Ack.FULL.value, Ack.NONE.value
_OPEN_RECORD_NEW = meta_encoder.encode(OpenRecord())


class _Outcome:
    __slots__ = ("attempts", "error", "invocation", "result")

    def __init__(self, invocation: Invocation, result: bytes | None, error: tuple[str, str] | None, attempts: int) -> None:
        self.invocation = invocation
        self.result = result
        self.error = error  # (exception type, formatted traceback)
        self.attempts = attempts


class _Reply:
    """Who waits for a record's processing, and the event bytes their append holds admitted (or None)."""

    __slots__ = ("ack", "admitted_bytes", "client", "request")

    def __init__(self, client: int, request: int, ack: str, admitted_bytes: int | None) -> None:
        self.client = client
        self.request = request
        self.ack = ack
        self.admitted_bytes = admitted_bytes


def _admitted(append: AppendRecord) -> int | None:
    """A client append was admitted with its event's size; a topology's (ctx.append) was not admitted."""
    return len(append.event) if append.client >= 0 else None


class _RecordState:
    """A record whose processing an appender may be waiting for: just appended, or, when it was
    appended with an idempotency key, restored after a crash so that a repeat waits for it too."""

    __slots__ = ("depot_id", "done", "errors", "keyed", "offset", "remaining", "replies", "results")

    def __init__(self, depot_id: int, offset: int, remaining: int, keyed: bool,
                 known: OpenRecord | None = None) -> None:
        self.depot_id = depot_id
        self.offset = offset
        self.remaining = remaining  # topologies still processing it
        self.replies: list[_Reply] = []
        self.results: dict[str, bytes] = dict(known.results) if known else {}
        self.errors: list[tuple[str, str, str]] = list(known.errors) if known else []
        self.done: list[str] = list(known.done) if known else []  # topologies whose tree completed
        self.keyed = keyed  # its results are kept with the idempotency key, durably


class _TreeState:
    """A tree rooted on this task that is still running: the XOR of its outstanding invocation ids."""

    __slots__ = (
        "errors",
        "offset",
        "partition",
        "pending_key",
        "record",
        "reply",
        "returned",
        "root_result",
        "topology",
        "xor",
    )

    def __init__(self, topology: str, xor: int, record: _RecordState | None, *, pending_key: bytes | None = None,
                 reply: _Reply | None = None, partition: int = 0, offset: int = 0) -> None:
        self.topology = topology
        self.xor = xor
        self.record = record
        self.pending_key = pending_key
        self.root_result: bytes | None = None
        self.returned: bytes | None = None
        self.errors: list[tuple[str, str]] = []
        self.reply = reply
        self.partition = partition
        self.offset = offset


class RoundOutcome:
    """What a host needs to know after a round: whether to stop, and when to run the next one."""

    __slots__ = ("backlog", "congested", "stopping")

    def __init__(self, stopping: bool, backlog: bool, congested: bool) -> None:
        self.stopping = stopping  # a Stop message was taken: run no more rounds
        self.backlog = backlog  # records or replays are left: run another round without waiting
        self.congested = congested  # the module's inboxes are full: look again soon, not at once


class Task:
    def __init__(self, runtime: ModuleRuntime, task_id: int, store: Store, transport: Transport, clock: Clock) -> None:
        self.runtime = runtime
        self.task_id = task_id
        self.store = store
        self.transport = transport
        self.clock = clock
        self._pstate_reader = store.reader("pstate")
        # Handlers' views run on the invocation running now; steps that queries call read committed state.
        self._views = TaskViews(runtime, task_id, TxnSlot(), writable=True)
        self._read_views = TaskViews(runtime, task_id, TxnSlot(self._pstate_reader), writable=False)
        self._subscriptions = [
            (stream, depot)
            for depot in runtime.depots.values()
            if depot.partitions > task_id
            for stream in depot.subscribers
        ]
        self._depot_end = {d.depot_id: self._stored_end(d.depot_id) for d in runtime.depots.values() if d.partitions > task_id}
        self._cursors: dict[tuple[str, int], int] = {}
        self._recent: dict[tuple[int, int], list[Any]] = {}  # (depot, offset) -> [timestamp_us, event, readers left]
        self._recent_bytes = 0
        self._records: dict[tuple[int, int], _RecordState] = {}
        self._trees: dict[int, _TreeState] = {}
        self._tree_seq = 0
        # Trees a crash cut short: (topology, pending key, offset, the root's encoded outbox).
        self._replays: deque[tuple[str, bytes, int, bytes]] = deque()
        stored = store.get("meta", UNIQUE_KEY)
        self._unique = U64.unpack(stored)[0] if stored else 0
        self._unique_dirty = False
        self._last_timestamp_us = 0
        # One loop turn is one round: the PState writes of all its invocations (each merged only if
        # it succeeded), its progress and metadata commit in one batch, and only then do its hops,
        # replies and admission releases go out.
        self._round = Batch()
        self._round_txn = self._new_txn(self._pstate_reader)
        self._outgoing: list[tuple[int, bytes]] = []
        self._outgoing_bytes = 0  # of what handlers of this round sent (hops, appends)
        self._replies: list[tuple[int, bytes]] = []
        self._durable_replies: list[tuple[int, bytes]] = []  # Appended: may leave as soon as the sync is done
        # Full-ack appends made durable this round, by (client, request): their Completed reply
        # usually leaves in the same round and carries the offset, so an Appended reply is sent
        # only for those still processing when the round ends.
        self._unanswered: dict[tuple[int, int], tuple[int, int]] = {}
        self._progress: dict[tuple[str, int], int] = {}  # (topology, depot id) -> next offset, written per round
        self._releases = 0
        self._released_bytes = 0
        self._participants = {name: BatchParticipant(self, decl) for name, decl in runtime.microbatches.items()}
        self._coordinators = (
            {name: BatchCoordinator(self, decl) for name, decl in runtime.microbatches.items()}
            if task_id == COORDINATOR_TASK else {}
        )
        self._unsynced = False  # appends written since the last WAL sync
        self._congested = False  # the last round started no records: the module's inboxes were full

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """The host stopped running rounds: give back what the task holds outside itself."""
        for coordinator in self._coordinators.values():
            coordinator.release()  # never leave queries waiting on a commit that will not finish

    def recover(self) -> None:
        """Set each topology's cursor from stored progress and queue the trees a crash cut short."""
        batch = Batch()
        for stream, depot in self._subscriptions:
            key = progress_key(stream.name, depot.depot_id)
            stored = self.store.get("meta", key)
            if stored is None:
                cursor = self._initial_cursor(stream, depot)
                batch.put("meta", key, U64.pack(cursor))  # pinned now, so a restart cannot move "end"
            else:
                cursor = U64.unpack(stored)[0]
            self._cursors[(stream.name, depot.depot_id)] = cursor
            prefix = b"pending/" + stream.name.encode() + b"/" + DEPOT_KEY.pack(depot.depot_id, 0)[:2]
            for pending, outbox in self.store.iterate("meta", prefix, prefix + b"\xff" * 8):
                self._replays.append((stream.name, pending, DEPOT_KEY.unpack(pending[-10:])[1], outbox))
        self._recover_keyed_records(batch)
        for name, participant in self._participants.items():
            participant.recover(batch, self._initial_cursor)
            prefix = b"mb/" + name.encode() + b"/appends/"
            for pending, outbox in self.store.iterate("meta", prefix, prefix + b"\xff"):
                self._replays.append((name, pending, -1, outbox))
        if len(batch):
            self.store.write(batch, sync=True)

    def _recover_keyed_records(self, batch: Batch) -> None:
        """Restore the keyed records a crash left unfinished, so a repeat of one waits for its processing.

        A topology still owes the record its tree if its cursor has not passed the record, or if its
        tree was cut short (a pending entry, resent by `_resend`); the others completed before the
        crash and their results were kept in the record's open entry.
        """
        for key, value in self.store.iterate("meta", IDEM_OPEN_PREFIX, IDEM_OPEN_PREFIX + b"\xff" * 10):
            depot_id, offset = DEPOT_KEY.unpack(key[len(IDEM_OPEN_PREFIX):])
            known = open_record_decoder.decode(value)
            depot = self.runtime.depots_by_id.get(depot_id)
            owing = [
                stream for stream in (depot.subscribers if depot else [])
                if stream.name not in known.done and (
                    self._cursors[(stream.name, depot_id)] <= offset
                    or self.store.get("meta", pending_key(stream.name, depot_id, offset)) is not None)
            ]
            record = _RecordState(depot_id, offset, len(owing), True, known)
            if owing:
                self._records[(depot_id, offset)] = record
            else:  # its topologies were removed by an update: keep what is known as its results
                batch.put("meta", idem_results_key(depot_id, offset), messages.dumps((record.results, record.errors)))
                batch.delete("meta", key)

    def _initial_cursor(self, stream: Any, depot: DepotRuntime) -> int:
        start = stream.start_from
        end = self._depot_end[depot.depot_id]
        if start == "beginning":
            return 0
        if isinstance(start, dict):
            return min(max(0, start.get(self.task_id, end)), end)
        if isinstance(start, datetime):
            threshold_us = int(start.timestamp() * 1e6)
            for key, value in self.store.iterate("depot", depot_key(depot.depot_id, 0), depot_key(depot.depot_id + 1, 0)):
                if I64.unpack(value[:8])[0] >= threshold_us:
                    return DEPOT_KEY.unpack(key)[1]
        return end

    def _stored_end(self, depot_id: int) -> int:
        for key, _ in self.store.iterate("depot", depot_key(depot_id, 0), depot_key(depot_id + 1, 0), reverse=True):
            return DEPOT_KEY.unpack(key)[1] + 1
        return 0

    # ---- rounds ---------------------------------------------------------------------------
    def begin(self) -> None:
        """The first round, before any message: microbatch coordinators start, recovery's sends leave."""
        for coordinator in self._coordinators.values():
            coordinator.start()
        self._end_round()

    def run_round(self, batch: list[bytes]) -> RoundOutcome:
        """Handle `batch` (at most INBOX_DRAIN_MAX messages, in arrival order), advance the topologies,
        and commit: everything the round sends leaves only after its writes are durable."""
        decoded, stopping = self._decode(batch)
        self._handle(decoded)
        backlog = self._pump()
        self._end_round()
        return RoundOutcome(stopping, backlog, self._congested)

    @staticmethod
    def _new_txn(reader: Any) -> Any:
        return Txn(reader)

    def _end_round(self) -> None:
        batch = self._round
        add_txn_to_batch(self._round_txn, batch)
        if self._progress:
            for (topology, depot_id), cursor in self._progress.items():
                batch.put("meta", progress_key(topology, depot_id), U64.pack(cursor))
            self._progress.clear()
        if self._unique_dirty:
            batch.put("meta", UNIQUE_KEY, U64.pack(self._unique))
            self._unique_dirty = False
        if len(batch):
            self.store.write(batch, sync=False)
            self._round = Batch()
            self._round_txn = self._new_txn(self._pstate_reader)
        self._sync()  # this round's appends are durable before anyone hears of them
        self._send_durable_replies()
        transport = self.transport
        if self._unanswered:
            for (client, request), (partition, offset) in self._unanswered.items():
                transport.reply(client, messages.encode(messages.Appended(request, partition, offset)))
            self._unanswered.clear()
        for task_id, data in self._outgoing:
            transport.send(task_id, data)
        for client, data in self._replies:
            transport.reply(client, data)
        if self._releases:
            transport.release_appends(self.task_id, self._releases, self._released_bytes)
        self._outgoing.clear()
        self._outgoing_bytes = 0
        self._replies.clear()
        self._releases = 0
        self._released_bytes = 0

    def _sync(self) -> None:
        """Sync the WAL if appends were written since the last sync (their round's writes ride along).

        The sync runs here, on the thread running the round, which releases the interpreter lock
        while it waits for the disk: appenders run meanwhile. (A separate sync thread would need
        the lock to start and to finish each sync, and while the task computes it gets it late.)
        """
        if self._unsynced:
            self.store.sync()
            self._unsynced = False

    def _send_durable_replies(self) -> None:
        for client, data in self._durable_replies:
            self.transport.reply(client, data)
        self._durable_replies.clear()

    @staticmethod
    def _decode(batch: list[bytes]) -> tuple[list[Any], bool]:
        """The messages before a Stop, if any, and whether Stop was among them."""
        decoded: list[Any] = []
        for data in batch:
            message = messages.decode(data)
            if isinstance(message, Stop):
                return decoded, True
            decoded.append(message)
        return decoded, False

    def _handle(self, batch: list[Any]) -> None:
        appends = [m for m in batch if type(m) is AppendRecord]
        if appends:
            self._persist(appends)
            if len(appends) == len(batch):
                return
        for message in batch:
            if type(message) is AppendRecord:
                continue
            if isinstance(message, Hop):
                participant = self._participants.get(message.topology)
                if participant is not None:
                    participant.on_hop(message)
                else:
                    self._run_hop(message)
            elif isinstance(message, TreeAck):
                self._on_tree_ack(message)
            elif isinstance(message, RetryDeadLetter):
                self._retry_dead_letter(message)
            elif isinstance(message, (MbProcess, MbPhase)):
                participant = self._participants[message.topology]
                participant.on_process(message) if isinstance(message, MbProcess) else participant.on_phase(message)
            elif isinstance(message, (MbAck, MbDone, MbNudge, MbControl)):
                self._coordinate(message)

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

    # ---- appends: group commit ------------------------------------------------------------
    def _persist(self, appends: list[AppendRecord]) -> None:
        now_us = max(self.clock.time_us(), self._last_timestamp_us)
        self._last_timestamp_us = now_us
        stamp = I64.pack(now_us)
        batch = Batch()
        accepted: list[tuple[AppendRecord, int]] = []
        claimed: dict[bytes, bytes] = {}
        repeats: list[AppendRecord] = []  # answered after the batch is durable, like the first append
        for append in appends:
            if append.idempotency_key is not None:
                key = idem_key(append.depot_id, append.idempotency_key)
                if key in claimed or self.store.get("meta", key) is not None:
                    repeats.append(append)
                    continue
            offset = self._depot_end[append.depot_id]
            self._depot_end[append.depot_id] = offset + 1
            batch.put("depot", depot_key(append.depot_id, offset), stamp + append.event)
            if append.idempotency_key is not None:
                key = idem_key(append.depot_id, append.idempotency_key)
                claimed[key] = U64.pack(offset) + xxhash.xxh64_digest(append.event)
                batch.put("meta", key, claimed[key])
                if self.runtime.depots_by_id[append.depot_id].subscribers:
                    batch.put("meta", idem_open_key(append.depot_id, offset), _OPEN_RECORD_NEW)
            accepted.append((append, offset))
        if accepted:
            self.store.write(batch, sync=False)
            self._unsynced = True  # synced at the end of the round, with the writes of processing them
        for append, offset in accepted:
            self._on_appended(append, offset, now_us)
        for append in repeats:
            self._repeat(append)
        if self._durable_replies:  # Ack.APPEND means durable, not processed: sync and answer before processing
            self._sync()
            self._send_durable_replies()

    def _on_appended(self, append: AppendRecord, offset: int, timestamp_us: int) -> None:
        depot = self.runtime.depots_by_id[append.depot_id]
        for batched in depot.microbatches:
            self._participants[batched.name].nudge_if_new(append.depot_id)
        if append.tree is not None:  # a topology's ctx.append: that tree waited for this
            self._send_ack(TreeAck(append.tree, append.invocation))
        if append.client >= 0:
            if append.ack == _FULL:
                self._unanswered[(append.client, append.request)] = (append.partition, offset)
            elif append.ack != _NONE:
                appended = messages.Appended(append.request, append.partition, offset)
                self._durable_replies.append((append.client, messages.encode(appended)))
        reply = _Reply(append.client, append.request, append.ack, _admitted(append))
        record = _RecordState(append.depot_id, offset, len(depot.subscribers), append.idempotency_key is not None)
        if append.client >= 0:
            record.replies.append(reply)
        if depot.subscribers:
            self._records[(append.depot_id, offset)] = record
            if len(self._recent) < RECENT_RECORDS_MAX and self._recent_bytes + len(append.event) <= RECENT_BYTES_MAX:
                self._recent[(append.depot_id, offset)] = [timestamp_us, append.event, len(depot.subscribers)]
                self._recent_bytes += len(append.event)
        else:
            self._finish_record(record)

    def _repeat(self, append: AppendRecord) -> None:
        """Answer an append whose idempotency key was used before, without appending it."""
        stored = self.store.get("meta", idem_key(append.depot_id, append.idempotency_key or ""))
        assert stored is not None
        offset = U64.unpack(stored[:8])[0]
        reply = _Reply(append.client, append.request, append.ack, _admitted(append))
        if stored[8:] != xxhash.xxh64_digest(append.event):
            failure = (
                f"idempotency key {append.idempotency_key!r} was first used for a different event "
                f"(partition {append.partition}, offset {offset}); nothing was appended. Use a new key for a new event"
            )
            self._reply_completed(reply, append.partition, offset, {}, [], failure=failure, kind="IdempotencyConflict")
            return
        if append.ack != Ack.NONE.value and append.client >= 0:
            appended = messages.Appended(append.request, append.partition, offset)
            self._durable_replies.append((append.client, messages.encode(appended)))
        in_flight = self._records.get((append.depot_id, offset))
        if in_flight is not None:
            in_flight.replies.append(reply)
            return
        results: dict[str, bytes] = {}
        errors: list[tuple[str, str, str]] = []
        saved = self.store.get("meta", idem_results_key(append.depot_id, offset))
        if saved is not None:
            results, errors = messages.loads(saved)
        self._reply_completed(reply, append.partition, offset, results, errors)

    def _reply_completed(self, reply: _Reply, partition: int, offset: int, results: dict[str, bytes],
                         errors: list[tuple[str, str, str]], *, failure: str | None = None, kind: str | None = None) -> None:
        if reply.client >= 0 and (reply.ack == _FULL or failure is not None):
            done = Completed(reply.request, partition, offset, results, errors, failure, kind)
            self._replies.append((reply.client, messages.encode(done)))
            if self._unanswered:
                self._unanswered.pop((reply.client, reply.request), None)
        if reply.admitted_bytes is not None:
            self._releases += 1
            self._released_bytes += reply.admitted_bytes

    def _finish_record(self, record: _RecordState) -> None:
        self._records.pop((record.depot_id, record.offset), None)
        partition = self.task_id
        for reply in record.replies:
            self._reply_completed(reply, partition, record.offset, record.results, record.errors)
        if record.keyed:  # kept with the key, in the batch that records the last tree's completion
            saved = messages.dumps((record.results, record.errors))
            self._round.put("meta", idem_results_key(record.depot_id, record.offset), saved)
            self._round.delete("meta", idem_open_key(record.depot_id, record.offset))

    # ---- stream processing ----------------------------------------------------------------
    def _pump(self) -> bool:
        """Advance topologies over their backlog; True when work remains for the next turn.

        Nothing starts while the module's inboxes are congested: what a record's handler sends
        (hops, appends) would only queue up in memory behind them.
        """
        self._congested = self.transport.congested()
        if self._congested:
            return True
        budget = PUMP_RECORDS_MAX
        monotonic = self.clock.monotonic
        deadline = monotonic() + PUMP_TIME_MAX_S
        while self._replays and budget and self._outgoing_bytes < ROUND_SEND_BYTES_MAX:
            self._resend(*self._replays.popleft())
            budget -= 1
        for stream, depot in self._subscriptions:
            key = (stream.name, depot.depot_id)
            end = self._depot_end[depot.depot_id]
            while self._cursors[key] < end and budget:
                offset = self._cursors[key]
                timestamp_us, event = self._read_record(depot.depot_id, offset, consume=True)
                self._run_root(stream, depot, offset, timestamp_us, event, progress=True)
                self._cursors[key] = offset + 1
                budget -= 1
                if monotonic() >= deadline:
                    return True  # slow handlers: commit what ran and look at the inbox again
                if self._outgoing_bytes >= ROUND_SEND_BYTES_MAX:
                    return True  # big fan-out: send it, and see whether the receivers keep up
        return budget == 0

    def _resend(self, topology: str, pending_key: bytes, offset: int, outbox: bytes) -> None:
        """Finish a tree a crash cut short by sending its root's hops and appends again.

        The root's own writes committed with the pending entry, so they are not redone: only the
        other tasks' parts run again (at-least-once), under a new tree on this task.
        """
        pending = decode_pending(outbox)
        record = self._records.get(DEPOT_KEY.unpack(pending_key[-10:])) if offset >= 0 else None
        state = _TreeState(topology, 0, record, pending_key=pending_key, partition=self.task_id, offset=offset)
        state.root_result, state.returned = pending.root_result, pending.returned
        tree = self._new_tree(state)
        for task_id, data in pending.outbox:
            message = messages.decode(data)
            assert isinstance(message, (Hop, AppendRecord))
            message.tree = tree
            state.xor ^= message.invocation
            data = messages.encode(message)
            self._outgoing.append((task_id, data))
            self._outgoing_bytes += len(data)

    def _read_record(self, depot_id: int, offset: int, *, consume: bool) -> tuple[int, bytes]:
        cached = self._recent.get((depot_id, offset))
        if cached is not None:
            if consume:
                cached[2] -= 1
                if cached[2] == 0:
                    del self._recent[(depot_id, offset)]
                    self._recent_bytes -= len(cached[1])
            return cached[0], cached[1]
        value = self.store.get("depot", depot_key(depot_id, offset))
        assert value is not None, f"depot {depot_id} offset {offset} is below the end but missing"
        return I64.unpack(value[:8])[0], value[8:]

    def _new_tree(self, state: _TreeState) -> TreeRef:
        self._tree_seq += 1
        self._trees[self._tree_seq] = state
        return TreeRef(self.task_id, self._tree_seq)

    def _run_root(self, stream: StreamDecl, depot: DepotRuntime, offset: int, timestamp_us: int, event_data: bytes, *,
                  progress: bool, dead: DeadLetterEntry | None = None, reply: _Reply | None = None) -> None:
        own = invocation_id()
        record_state = self._records.get((depot.depot_id, offset)) if progress else None
        state = _TreeState(stream.name, own, record_state, reply=reply, partition=self.task_id, offset=offset)
        tree = self._new_tree(state)
        info = RecordInfo(depot.name, self.task_id, offset, timestamp_us)
        outcome = self.invoke(stream.name, tree, info, lambda ctx: stream.fn(ctx, depot.codec.decode(event_data)), stream.retry)
        if progress:
            self._progress[(stream.name, depot.depot_id)] = offset + 1
        if outcome.invocation.has_children:  # kept until the tree completes, so a crash can resend it
            state.pending_key = pending_key(stream.name, depot.depot_id, offset)
            pending = PendingTree(outcome.invocation.outbox, outcome.result, outcome.invocation.returned)
            self._round.put("meta", state.pending_key, meta_encoder.encode(pending))
        state.root_result = outcome.result
        self._commit(outcome, "record", info, dead=dead)
        self._apply_ack(tree.seq, state, own ^ outcome.invocation.children_xor, outcome)

    def _run_hop(self, hop: Hop, *, dead: DeadLetterEntry | None = None) -> None:
        info = RecordInfo(hop.depot, hop.partition, hop.offset, hop.timestamp_us)
        stream = self.runtime.streams.get(hop.topology)
        retry = stream.retry if stream is not None else Retry.NONE

        def call(ctx: Context) -> Any:
            step = self.runtime.step(hop.step)
            args, kwargs = messages.loads(hop.args)
            return step.fn(ctx, *args, **kwargs)

        outcome = self.invoke(hop.topology, hop.tree, info, call, retry, depth=hop.depth)
        outcome.result = None  # a step's return value goes nowhere; ack_return carries values back
        self._commit(outcome, "hop", info, dead=dead, hop=hop)
        ack = TreeAck(hop.tree, hop.invocation ^ outcome.invocation.children_xor, outcome.invocation.returned,
                      *(outcome.error or (None, None)))
        self._send_ack(ack)

    def invoke(self, topology: str, tree: TreeRef, info: RecordInfo, call: Callable[[Context], Any], retry: Retry,
               *, base: Any = None, deferred: bool = False, depth: int = 0) -> _Outcome:
        """Run user code once (or per `retry`) over a fresh Txn on `base` (default: the round's writes).

        `deferred`: a microbatch invocation (its appends wait for the batch's commit); `depth`: the
        hops between its tree's root and it."""
        attempt = 0
        while True:
            # The invocation's writes sit over the round's, so it reads what earlier events wrote.
            invocation = Invocation(topology, tree, info, self._new_txn(self._round_txn if base is None else base), depth)
            if deferred:
                invocation.deferred_appends = []
            slot = self._views.slot
            slot.txn = invocation.txn
            slot.writer = "microbatch" if deferred else "stream"
            try:
                result = call(Context(self.runtime, self, invocation, self._views))
                return _Outcome(invocation, messages.dumps(result), None, attempt + 1)
            except Exception as e:
                if attempt >= retry.times:
                    invocation.outbox.clear()
                    invocation.children_xor = 0
                    invocation.has_children = False
                    invocation.returned = None
                    return _Outcome(invocation, None, (_error_name(e), traceback.format_exc()), attempt + 1)
            finally:
                slot.txn = FINISHED  # a view kept past its invocation fails clearly instead of writing nowhere
            self.clock.sleep(retry.delay_s(attempt))
            attempt += 1

    def _commit(self, outcome: _Outcome, kind: str, info: RecordInfo, *,
                dead: DeadLetterEntry | None, hop: Hop | None = None) -> None:
        """Add an invocation's effects (or its dead letter) to the round; what it spawned leaves after."""
        invocation = outcome.invocation
        round_txn, batch = self._round_txn, self._round
        if outcome.error is None:
            invocation.txn.merge_into(round_txn)
            if dead is not None:
                batch.delete("meta", dead_key(invocation.topology, dead.id))
        else:
            entry = DeadLetterEntry(
                dead.id if dead else self.next_unique_id(), invocation.topology, kind, self.task_id, info.depot,
                info.partition, info.offset, info.timestamp_us, outcome.error[0], outcome.error[1],
                outcome.attempts + (dead.attempts if dead else 0),
                hop.step if hop else None, hop.args if hop else None,
            )
            batch.put("meta", dead_key(invocation.topology, entry.id), meta_encoder.encode(entry))
            _log.warning("%s.%s: %s at %s/%s offset %s went to the dead letters: %s", self.runtime.name,
                         invocation.topology, kind, info.depot, info.partition, info.offset, outcome.error[0])
        self._outgoing.extend(invocation.outbox)
        self._outgoing_bytes += sum(len(data) for _, data in invocation.outbox)

    # ---- trees ----------------------------------------------------------------------------
    def _send_ack(self, ack: TreeAck) -> None:
        if ack.tree.root_task == self.task_id:
            self._on_tree_ack(ack)
        else:
            self._outgoing.append((ack.tree.root_task, messages.encode(ack)))

    def _on_tree_ack(self, ack: TreeAck) -> None:
        state = self._trees.get(ack.tree.seq)
        if state is None:
            return  # already complete, or from before a restart (recovery resent its hops under a new tree)
        self._settle(ack.tree.seq, state, ack.xor, ack.returned, ack.error_type, ack.error)

    def _settle(self, seq: int, state: _TreeState, xor: int, returned: bytes | None, error_type: str | None,
                error: str | None) -> None:
        if returned is not None:
            state.returned = returned
        if error is not None:
            state.errors.append((error_type or "Exception", error))
        state.xor ^= xor
        if state.xor == 0:
            self._complete_tree(seq, state)

    def _apply_ack(self, seq: int, state: _TreeState, xor: int, outcome: _Outcome) -> None:
        error_type, error = outcome.error or (None, None)
        self._settle(seq, state, xor, outcome.invocation.returned, error_type, error)

    def _complete_tree(self, seq: int, state: _TreeState) -> None:
        del self._trees[seq]
        if state.pending_key is not None:
            self._round.delete("meta", state.pending_key)
        result = state.returned if state.returned is not None else state.root_result
        errors = [(state.topology, kind, text) for kind, text in state.errors]
        if state.record is not None:
            record = state.record
            if not errors and result is not None:
                record.results[state.topology] = result
            record.errors.extend(errors)
            record.done.append(state.topology)
            record.remaining -= 1
            if record.remaining == 0:
                self._finish_record(record)
            elif record.keyed:  # a crash before the others finish must not lose this tree's result
                known = OpenRecord(record.results, record.errors, record.done)
                self._round.put("meta", idem_open_key(record.depot_id, record.offset), meta_encoder.encode(known))
        if state.reply is not None:
            results = {state.topology: result} if result is not None and not errors else {}
            self._reply_completed(state.reply, state.partition, state.offset, results, errors)

    # ---- dead letters ---------------------------------------------------------------------
    def _retry_dead_letter(self, message: RetryDeadLetter) -> None:
        reply = _Reply(message.client, message.request, _FULL, None)
        stored = self.store.get("meta", dead_key(message.topology, message.dead_letter_id))
        if stored is None:
            failure = f"dead letter {message.dead_letter_id} of topology {message.topology!r} is gone (already retried?)"
            self._reply_completed(reply, self.task_id, -1, {}, [], failure=failure, kind="NotFound")
            return
        entry = dead_decoder.decode(stored)
        participant = self._participants.get(entry.topology)
        if participant is not None:
            participant.retry(entry, reply)
            return
        if entry.kind == "record":
            stream = self.runtime.streams[entry.topology]
            depot = self.runtime.depot(entry.depot)
            timestamp_us, event = self._read_record(depot.depot_id, entry.offset, consume=False)
            self._run_root(stream, depot, entry.offset, timestamp_us, event, progress=False, dead=entry, reply=reply)
            return
        own = invocation_id()
        state = _TreeState(entry.topology, own, None, reply=reply, partition=entry.partition, offset=entry.offset)
        tree = self._new_tree(state)
        hop = Hop(tree, own, entry.topology, entry.step or "", entry.args or b"", entry.depot, entry.partition,
                  entry.offset, entry.timestamp_us)
        self._run_hop(hop, dead=entry)

    # ---- reads of committed state (served in the caller's thread in process) -------------
    def serve_read(self, request: tuple[Any, ...]) -> Any:
        kind = request[0]
        if kind == "pstate":
            _, name, steps, op, args, kwargs = request
            return self.runtime.pstates[name].layout.read(self._pstate_reader, steps, op, args, kwargs)
        if kind == "depot_read":
            _, depot_id, start, stop = request
            return [(DEPOT_KEY.unpack(k)[1], I64.unpack(v[:8])[0], v[8:])
                    for k, v in self.store.iterate("depot", depot_key(depot_id, start), depot_key(depot_id, stop))]
        if kind == "depot_end":
            return self._stored_end(request[1])
        if kind == "dead_letters":
            prefix = b"dead/" + request[1].encode() + b"/"
            return [dead_decoder.decode(v) for _, v in self.store.iterate("meta", prefix, prefix + b"\xff" * 9)]
        if kind == "mb_status":
            coordinator = self._coordinators.get(request[1])
            if coordinator is None:
                raise NotFound("microbatch topology", str(request[1]), self._coordinators, where=f"module {self.runtime.name!r}")
            return coordinator.status()
        if kind == "progress":
            return self._stored_progress()
        if kind == "step":
            _, step_name, payload = request
            args, kwargs = messages.loads(payload)
            step = self.runtime.step(step_name)
            return step.fn(Context(self.runtime, self, None, self._read_views), *args, **kwargs)
        if kind == "query":
            from headwater.engine.query import query_decl, run_query_body

            _, name, payload, depth = request
            args, kwargs = messages.loads(payload)
            decl = query_decl(self.runtime, name)
            return run_query_body(self.runtime, self.transport, decl, args, kwargs, depth, self.task_id)
        raise NotFound("read", str(kind), ["pstate", "depot_read", "depot_end", "dead_letters", "progress", "step", "query"])

    def _stored_progress(self) -> dict[tuple[str, int], int]:
        """{(topology, depot id): next offset to process} for this task's partitions."""
        progress = {}
        for key, value in self.store.iterate("meta", b"progress/", b"progress0"):
            # b"progress/<topology>/<depot id, 2 bytes>": the id may itself contain a b"/".
            topology, depot_id = key[len(b"progress/"):-3].decode(), int.from_bytes(key[-2:], "big")
            progress[(topology, depot_id)] = U64.unpack(value)[0]
        return progress

    # ---- what microbatch participants and coordinators use --------------------------------
    def answer(self, reply: _Reply, *, errors: list[tuple[str, str, str]] | None = None) -> None:
        """Tell a waiting client its request finished (a retried microbatch dead letter)."""
        self._reply_completed(reply, self.task_id, -1, {}, errors or [])

    @property
    def pstate_reader(self) -> Any:
        return self._pstate_reader

    new_txn = _new_txn

    def send(self, task_id: int, data: bytes) -> None:
        """Send once this round commits."""
        self._outgoing.append((task_id, data))

    def depot_end(self, depot_id: int) -> int:
        return self._depot_end[depot_id]

    def read_records(self, depot_id: int, start: int, stop: int) -> list[tuple[int, int, bytes]]:
        """(offset, timestamp_us, event) of the records in [start, stop) of this task's partition."""
        if stop - start == 1:
            return [(start, *self._read_record(depot_id, start, consume=False))]
        return [(DEPOT_KEY.unpack(k)[1], I64.unpack(v[:8])[0], v[8:])
                for k, v in self.store.iterate("depot", depot_key(depot_id, start), depot_key(depot_id, stop))]

    @staticmethod
    def encode_outbox(outbox: list[tuple[int, bytes]]) -> bytes:
        return meta_encoder.encode(outbox)

    def resend(self, topology: str, pending_key: bytes, offset: int, outbox: bytes) -> None:
        self._resend(topology, pending_key, offset, outbox)

    # ---- helpers for the context ----------------------------------------------------------
    def next_unique_id(self) -> int:
        self._unique += 1
        self._unique_dirty = True
        return (self.task_id << 47) | self._unique

    def partition_for(self, depot: DepotRuntime, event: Any) -> int:
        return depot.partition_for(event)


def _error_name(error: BaseException) -> str:
    if isinstance(error, HeadwaterError):
        return type(error).__name__
    return f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins.")
