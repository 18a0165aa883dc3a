"""Microbatch topologies: exactly-once processing in batches that commit on every task at once.

Task 0 coordinates each microbatch topology through phases, all messages over the transport:

1. **process** — every task plans its slice of the batch (the new records of its partitions,
   at most `BATCH_RECORDS_MAX` each) and runs the handler over them into a private overlay;
   hops land in the overlays of other tasks. Invocations report XOR-ed ids to the coordinator,
   exactly like stream trees, so it knows when the whole batch has run everywhere.
2. If anything raised, every task drops its overlay (**abort**) and the batch runs again from
   the same records. A record that keeps failing (`BATCH_ATTEMPTS_MAX` times) is set aside as a
   dead letter and the batch runs without it.
3. **prepare** — each task writes its overlay, new progress and dead letters durably as a
   *staged* batch, not yet visible.
4. The coordinator durably records the batch as decided, holds off consistent reads, and has
   every task **apply** its staged batch (one atomic write each), then lets reads resume.

A crash anywhere is recovered from disk: staged batches of a decided batch are applied, others
are dropped and their batch runs again from the same records. PStates end as if nothing failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from headwater.engine import messages
from headwater.engine.context import Context, RecordInfo, invocation_id
from headwater.engine.definitions import MicrobatchDecl, Retry
from headwater.engine.messages import BatchFailure, Hop, MbAck, MbControl, MbDone, MbPhase, MbProcess, TreeRef
from headwater.engine.meta import U64, DeadLetterEntry, dead_key, meta_encoder, progress_key
from headwater.engine.runtime import DepotRuntime, ModuleRuntime
from headwater.engine.transport import Clock, Transport
from headwater.storage import Batch, Reader, Store

__all__ = ["BATCH_ATTEMPTS_MAX", "BATCH_RECORDS_MAX", "BatchCoordinator", "BatchHost", "BatchParticipant"]

BATCH_RECORDS_MAX = 50_000  # records per partition in one batch: under a backlog, big batches amortize each commit
BATCH_ATTEMPTS_MAX = 5  # failures of one record before it is set aside as a dead letter
COORDINATOR_TASK = 0



class BatchHost(Protocol):
    """What a microbatch participant or coordinator uses of its task, and nothing more."""

    runtime: ModuleRuntime
    task_id: int
    store: Store
    transport: Transport
    clock: Clock
    pstate_reader: Reader

    def send(self, task_id: int, data: bytes) -> None:
        """Send once the running round commits."""

    def new_txn(self, reader: Any) -> Any: ...

    def depot_end(self, depot_id: int) -> int: ...

    def read_records(self, depot_id: int, start: int, stop: int) -> list[tuple[int, int, bytes]]: ...

    def invoke(self, topology: str, tree: TreeRef, info: RecordInfo, call: Callable[[Context], Any], retry: Retry,
               *, base: Any = None, deferred: bool = False, depth: int = 0) -> Any:
        """Run user code over a fresh overlay of `base`, as stream handlers run."""

    def encode_outbox(self, outbox: list[tuple[int, bytes]]) -> bytes: ...

    def resend(self, topology: str, pending_key: bytes, offset: int, outbox: bytes) -> None:
        """Send stored appends again, as a tree that completes when each is acknowledged."""

    def answer(self, reply: Any, *, errors: list[tuple[str, str, str]] | None = None) -> None:
        """Tell a waiting client (a dead letter's retry) that its request finished."""

    def next_unique_id(self) -> int: ...


def batch_tree(batch: int, attempt: int) -> TreeRef:
    # Hops of a batch carry its number and attempt, so a hop can never land in another attempt's overlay;
    # ctx.batch_id reads the number back (context.Context.batch_id).
    return TreeRef(COORDINATOR_TASK, (batch << 32) | (attempt & 0xFFFFFFFF))


def _on_event(fn: Callable[[Context, Any], Any], decode: Callable[[bytes], Any],
              data: bytes) -> Callable[[Context], Any]:
    """A call of the handler on one encoded event (a function of its own, so each row keeps its event)."""
    return lambda ctx: fn(ctx, decode(data))


def _key(topology: str, what: str) -> bytes:
    return b"mb/" + topology.encode() + b"/" + what.encode()


class Staged(msgspec.Struct, array_like=True):
    """A task's part of a prepared batch: durable, not yet visible."""

    batch: int
    plan: list[tuple[int, int, int, bool]]  # (depot id, start, stop, whether it advances progress)
    writes: list[tuple[bytes, bytes | None]]
    cleared: list[tuple[bytes, bytes]]  # PState key ranges deleted (applied before `writes`)
    dead: list[tuple[bytes, bytes]]
    appends: list[tuple[int, bytes]]
    records: int


class Planned(msgspec.Struct, array_like=True):
    """The records a task's part of an undecided batch runs over, kept until the batch is applied,
    so that every attempt of the batch, after a crash too, runs over the same records."""

    batch: int
    plan: list[tuple[int, int, int, bool]]


_staged_encoder = msgspec.msgpack.Encoder()
_staged_decoder = msgspec.msgpack.Decoder(Staged)
_planned_decoder = msgspec.msgpack.Decoder(Planned)


class BatchParticipant:
    """One task's side of one microbatch topology."""

    def __init__(self, task: BatchHost, decl: MicrobatchDecl) -> None:
        self.task = task
        self.decl = decl
        self.name = decl.name
        self.depots: list[DepotRuntime] = [
            d for d in task.runtime.depots.values() if decl in d.microbatches and d.partitions > task.task_id
        ]
        self.cursors: dict[int, int] = {}
        self.nudged = False
        self.batch = -1
        self.tree: TreeRef | None = None
        self.plan: list[tuple[int, int, int, bool]] | None = None
        # Dead letters being retried: record -> (dead letter id, who waits for the outcome)
        self.retries: dict[tuple[int, int, int], tuple[Any, Any]] = {}
        self.txn: Any = None
        self.appends: list[tuple[int, bytes]] = []
        self.records = 0
        self.skipped: list[BatchFailure] = []
        self.staged: Staged | None = None

    # ---- recovery -------------------------------------------------------------------------
    def recover(self, batch: Batch, cursor_for: Callable[[Any, DepotRuntime], int]) -> None:
        for depot in self.depots:
            key = progress_key(self.name, depot.depot_id)
            stored = self.task.store.get("meta", key)
            if stored is None:
                cursor = cursor_for(self.decl, depot)
                batch.put("meta", key, U64.pack(cursor))
            else:
                cursor = U64.unpack(stored)[0]
            self.cursors[depot.depot_id] = cursor
        stored = self.task.store.get("meta", _key(self.name, "staged"))
        if stored is not None:
            self.staged = _staged_decoder.decode(stored)

    def nudge_if_new(self, depot_id: int) -> None:
        if not self.nudged and depot_id in self.cursors:
            self.nudged = True
            self.task.send(COORDINATOR_TASK, messages.encode(messages.MbNudge(self.name)))

    # ---- phase 1: process -----------------------------------------------------------------
    def _enter(self, tree: TreeRef) -> None:
        if self.tree != tree:
            self.tree = tree
            self.txn = self.task.new_txn(self.task.pstate_reader)
            self.appends = []

    def _make_plan(self, batch: int) -> list[tuple[int, int, int, bool]]:
        if self.staged is not None and self.staged.batch == batch:
            return self.staged.plan  # a batch runs again over exactly the records it ran over before
        stored = self.task.store.get("meta", _key(self.name, "planned"))
        if stored is not None:
            planned = _planned_decoder.decode(stored)
            if planned.batch == batch:  # planned before a crash: ctx.batch_id names the same records
                return planned.plan
        plan = []
        for depot in self.depots:
            start = self.cursors[depot.depot_id]
            stop = min(self.task.depot_end(depot.depot_id), start + BATCH_RECORDS_MAX)
            plan.append((depot.depot_id, start, stop, True))
        # Retried dead letters run once more, without moving progress (they are behind it).
        plan.extend((depot_id, offset, offset + 1, False) for depot_id, _, offset in self.retries)
        if any(start < stop for _, start, stop, _ in plan):
            # Kept (unsynced: a crash of the process keeps it, as it keeps the appends) before any
            # handler runs, and deleted when the batch is applied. An empty plan is not kept: its
            # batch runs no code and commits nothing, so its number is used again.
            stored_plan = Batch()
            stored_plan.put("meta", _key(self.name, "planned"), _staged_encoder.encode(Planned(batch, plan)))
            self.task.store.write(stored_plan, sync=False)
        return plan

    def retry(self, entry: Any, reply: Any) -> None:
        """Run a dead-lettered record again in the next batch; `reply` hears how it went."""
        depot = self.task.runtime.depot(entry.depot)
        self.retries[(depot.depot_id, entry.partition, entry.offset)] = (entry, reply)
        self.task.send(COORDINATOR_TASK, messages.encode(messages.MbNudge(self.name)))

    def on_process(self, message: MbProcess) -> None:
        self.nudged = False
        first = message.attempt & 0xFFFF == 0  # a batch's first attempt plans; later ones rerun the same records
        if first or self.plan is None or self.batch != message.batch:
            self.batch = message.batch
            self.plan = self._make_plan(message.batch)
        assert self.plan is not None
        self._enter(batch_tree(message.batch, message.attempt))
        self.skipped = list(message.skip)
        skip = {(f.depot_id, f.partition, f.offset) for f in message.skip}
        xor, records = message.invocation, 0
        failures: list[BatchFailure] = []
        for depot_id, start, stop, _ in self.plan:
            depot = self.task.runtime.depots_by_id[depot_id]
            rows = [row for row in self.task.read_records(depot_id, start, stop)
                    if (depot_id, self.task.task_id, row[0]) not in skip]
            records += stop - start
            xor ^= self._run_rows(depot, rows, failures)
        more = any(advance and stop < self.task.depot_end(depot_id) for depot_id, _, stop, advance in self.plan)
        self.records = records
        ack = MbAck(self.name, self.batch, xor, failures, records, more, message.attempt)
        self.task.send(COORDINATOR_TASK, messages.encode(ack))

    def _run_rows(self, depot: DepotRuntime, rows: list[tuple[int, int, bytes]], failures: list[BatchFailure]) -> int:
        """Run the handler over the rows of one partition; returns the XOR of the hops spawned."""
        if not rows:
            return 0
        if getattr(depot.decl.source, "latest_only_in_batches", False):
            rows = rows[-1:]  # a tick depot: a batch sees the latest tick, not the ones it caught up on
        decode = depot.codec.decode
        if self.decl.per_batch:
            first = rows[0]
            info = RecordInfo(depot.name, self.task.task_id, first[0], first[1])
            events = [decode(data) for _, _, data in rows]
            return self._run(info, lambda ctx: self.decl.fn(ctx, events), failures, [row[0] for row in rows], depot)
        xor = 0
        for offset, timestamp_us, data in rows:
            info = RecordInfo(depot.name, self.task.task_id, offset, timestamp_us)
            xor ^= self._run(info, _on_event(self.decl.fn, decode, data), failures, [offset], depot)
        return xor

    def _run(self, info: RecordInfo, call: Callable[[Context], Any], failures: list[BatchFailure],
             offsets: list[int], depot: DepotRuntime) -> int:
        assert self.tree is not None
        outcome = self.task.invoke(self.name, self.tree, info, call, Retry.NONE, base=self.txn, deferred=True)
        if outcome.error is not None:
            kind, text = outcome.error
            failures.extend(BatchFailure(self.task.task_id, depot.depot_id, info.partition, offset, kind, text)
                            for offset in offsets)
            return 0
        self._merge(outcome)
        return outcome.invocation.children_xor

    def _merge(self, outcome: Any) -> None:
        invocation = outcome.invocation
        invocation.txn.merge_into(self.txn)
        self.appends.extend(invocation.deferred_appends or ())
        for task_id, data in invocation.outbox:
            self.task.send(task_id, data)

    def on_hop(self, hop: Hop) -> None:
        """A hop of this batch from another invocation: run it into the same overlay."""
        if self.tree is not None and hop.tree.seq < self.tree.seq:
            return  # of an attempt before a redrive: the coordinator no longer counts it
        self._enter(hop.tree)
        info = RecordInfo(hop.depot, hop.partition, hop.offset, hop.timestamp_us)

        def call(ctx: Context) -> Any:
            step = self.task.runtime.step(hop.step)
            args, kwargs = messages.loads(hop.args)
            return step.fn(ctx, *args, **kwargs)

        outcome = self.task.invoke(self.name, hop.tree, info, call, Retry.NONE, base=self.txn, deferred=True,
                                   depth=hop.depth)
        failures = []
        if outcome.error is None:
            self._merge(outcome)
        else:
            depot = self.task.runtime.depot(hop.depot)
            failures.append(BatchFailure(self.task.task_id, depot.depot_id, hop.partition, hop.offset, *outcome.error))
        xor = hop.invocation ^ (outcome.invocation.children_xor if outcome.error is None else 0)
        ack = MbAck(self.name, hop.tree.seq >> 32, xor, failures, attempt=hop.tree.seq & 0xFFFFFFFF)
        self.task.send(COORDINATOR_TASK, messages.encode(ack))

    # ---- phases 2-4 -----------------------------------------------------------------------
    def on_phase(self, message: MbPhase) -> None:
        if message.phase == "abort":
            self.tree, self.txn, self.appends = None, None, []
        elif message.phase == "prepare":
            self._prepare(message)
        elif message.phase == "apply":
            self._apply(message.batch)
            done = MbDone(self.name, message.batch, "apply", self.task.task_id)
            self.task.send(COORDINATOR_TASK, messages.encode(done))
        elif message.phase == "recover":
            # The coordinator started again, or a task did: what this task ran of a batch in memory
            # is void (the batch runs again, planned anew), and its stage is settled from disk.
            self.batch, self.plan, self.tree, self.txn, self.appends = -1, None, None, None, []
            if self.staged is None:
                return
            if self.staged.batch <= message.batch:
                self._apply(self.staged.batch)  # decided before the crash: finish it
            else:
                # Undecided: drop its writes; the batch runs again over the staged plan's records.
                self.staged.writes, self.staged.cleared, self.staged.dead, self.staged.appends = [], [], [], []

    def _prepare(self, message: MbPhase) -> None:
        if self.plan is None or self.batch != message.batch:
            # This task came back, or took over, since it ran the batch: the prepare is from before
            # the coordinator's redrive, which runs the batch again as a new attempt.
            return
        writes = self.txn.pending(expand_ranges=False) if self.txn is not None else []
        cleared = self.txn.deleted_ranges() if self.txn is not None else []
        dead = []
        retried = {record: entry for record, (entry, _) in self.retries.items()}
        for failure in self.skipped:
            if failure.partition != self.task.task_id:
                continue  # the dead letter lives with its record, on the task owning its partition
            record = (failure.depot_id, failure.partition, failure.offset)
            earlier = retried.pop(record, None)  # a failed retry keeps its id and adds up its attempts
            entry = DeadLetterEntry(earlier.id if earlier else self.task.next_unique_id(), self.name, "record",
                                    self.task.task_id, self.task.runtime.depots_by_id[failure.depot_id].name,
                                    failure.partition, failure.offset, 0, failure.error_type, failure.traceback,
                                    BATCH_ATTEMPTS_MAX + (earlier.attempts if earlier else 0))
            dead.append((dead_key(self.name, entry.id), meta_encoder.encode(entry)))
        for earlier in retried.values():  # retried and succeeded: the dead letter goes
            dead.append((dead_key(self.name, earlier.id), b""))
        self.staged = Staged(message.batch, self.plan, writes, cleared, dead, self.appends, self.records)
        batch = Batch()
        batch.put("meta", _key(self.name, "staged"), _staged_encoder.encode(self.staged))
        self.task.store.write(batch, sync=True)
        done = MbDone(self.name, message.batch, "prepare", self.task.task_id, self.records)
        self.task.send(COORDINATOR_TASK, messages.encode(done))

    def _apply(self, batch_number: int) -> None:
        staged = self.staged
        if staged is None or staged.batch != batch_number:
            return  # applied already (a recovery raced the coordinator's apply)
        batch = Batch()
        for key_start, key_stop in staged.cleared:
            batch.delete_range("pstate", key_start, key_stop)
        for key, value in staged.writes:
            if value is None:
                batch.delete("pstate", key)
            else:
                batch.put("pstate", key, value)
        for depot_id, _, stop, advance in staged.plan:
            if advance:
                batch.put("meta", progress_key(self.name, depot_id), U64.pack(stop))
                self.cursors[depot_id] = stop
        for key, value in staged.dead:
            if value:
                batch.put("meta", key, value)
            else:
                batch.delete("meta", key)
        batch.delete("meta", _key(self.name, "staged"))
        batch.delete("meta", _key(self.name, "planned"))
        pending = _key(self.name, f"appends/{batch_number}")
        if staged.appends:  # sent after the commit and resent after a crash until acked: at-least-once
            batch.put("meta", pending, self.task.encode_outbox(staged.appends))
        self.task.store.write(batch, sync=False)
        if staged.appends:
            self.task.resend(self.name, pending, -1, self.task.encode_outbox(staged.appends))
        self._answer_retries(staged)
        self.staged, self.plan, self.txn, self.tree, self.appends = None, None, None, None, []

    def _answer_retries(self, staged: Staged) -> None:
        failed = {key for key, value in staged.dead if value}
        planned = {(depot_id, start) for depot_id, start, _, advance in staged.plan if not advance}
        for record, (entry, reply) in list(self.retries.items()):
            if (record[0], record[2]) not in planned:
                continue  # queued after this batch was planned: it runs in the next one
            del self.retries[record]
            if dead_key(self.name, entry.id) in failed:
                self.task.answer(reply,
                                 errors=[(self.name, "HandlerError", "the record failed again; see its dead letter")])
            else:
                self.task.answer(reply)


class BatchCoordinator:
    """Task 0's side of one microbatch topology: drives every task through each batch."""

    def __init__(self, task: BatchHost, decl: MicrobatchDecl) -> None:
        self.task = task
        self.name = decl.name
        stored = task.store.get("meta", _key(self.name, "decided"))
        self.decided = U64.unpack(stored)[0] if stored else 0
        stored = task.store.get("meta", _key(self.name, "starts"))
        self._starts = U64.unpack(stored)[0] if stored else 0
        self._attempt_base = 0  # attempts on the wire: unique across this coordinator's starts
        self.phase = "idle"
        self.paused = False
        self.work_waiting = True  # look once at start: records may have arrived while down
        self.batch = 0
        self.attempt = 0
        self.xor = 0
        self.failures: list[BatchFailure] = []
        self.failure_counts: dict[tuple[int, int, int], int] = {}
        self.skip: dict[tuple[int, int, int], BatchFailure] = {}
        self.records = 0
        self.more = False
        self.done: set[int] = set()
        self.processed = 0  # records committed since this deployment started
        self.batches = 0
        self.committing = False

    def _broadcast(self, message: Any) -> None:
        data = messages.encode(message)
        for task_id in range(self.task.runtime.tasks):
            self.task.send(task_id, data)

    def start(self) -> None:
        # A task that kept running may still hold hops of an attempt from before this start, with
        # the same batch number: attempts on the wire count from a base no earlier start used.
        self._starts += 1
        batch = Batch()
        batch.put("meta", _key(self.name, "starts"), U64.pack(self._starts))
        self.task.store.write(batch, sync=True)
        self._attempt_base = (self._starts & 0xFFFF) << 16
        self._broadcast(MbPhase(self.name, self.decided, "recover"))
        self._maybe_start()

    def on_nudge(self) -> None:
        self.work_waiting = True
        self._maybe_start()

    def on_control(self, action: str) -> None:
        if action == "commit":  # the queries that held the commit off ended; the transport started it
            if self.phase == "decided":
                self._apply()
            return
        self.paused = action == "pause"
        self._maybe_start()

    def _maybe_start(self) -> None:
        if self.phase != "idle" or self.paused or not self.work_waiting:
            return
        self.work_waiting = False
        self.batch, self.attempt = self.decided + 1, 0
        self.failure_counts.clear()
        self.skip.clear()
        self._process()

    def _process(self) -> None:
        self.phase, self.failures, self.records, self.more = "process", [], 0, False
        self.xor = 0
        skip = list(self.skip.values())
        for task_id in range(self.task.runtime.tasks):
            invocation = invocation_id()
            self.xor ^= invocation
            message = MbProcess(self.name, self.batch, self._wire_attempt(), invocation, skip)
            self.task.send(task_id, messages.encode(message))

    def on_ack(self, ack: MbAck) -> None:
        if self.phase != "process" or ack.batch != self.batch or ack.attempt != self._wire_attempt():
            return
        self.xor ^= ack.xor
        self.failures.extend(ack.failures)
        self.records += ack.records
        self.more = self.more or ack.more
        if self.xor == 0:
            self._processed()

    def _wire_attempt(self) -> int:
        return self._attempt_base | (self.attempt & 0xFFFF)

    def _processed(self) -> None:
        if self.failures:
            self._broadcast(MbPhase(self.name, self.batch, "abort"))
            for failure in self.failures:
                record = (failure.depot_id, failure.partition, failure.offset)
                self.failure_counts[record] = self.failure_counts.get(record, 0) + 1
                if self.failure_counts[record] >= BATCH_ATTEMPTS_MAX:
                    self.skip[record] = failure
            self.attempt += 1
            self._process()
        elif self.records == 0:
            self.phase = "idle"  # nothing arrived: no commit needed, and an idle topology costs nothing
            self._finish()
        else:
            self.phase, self.done = "prepare", set()
            self._broadcast(MbPhase(self.name, self.batch, "prepare"))

    def on_done(self, done: MbDone) -> None:
        if done.batch != self.batch or done.phase != self.phase:
            return
        self.done.add(done.task)
        if len(self.done) < self.task.runtime.tasks:
            return
        if self.phase == "prepare":
            batch = Batch()
            batch.put("meta", _key(self.name, "decided"), U64.pack(self.batch))
            self.task.store.write(batch, sync=True)  # the commit point: from here the batch will be applied
            self.phase = "decided"
            wake = messages.encode(MbControl(self.name, "commit"))
            if self.task.transport.begin_commit(self.task.task_id, wake):
                self._apply()
            # else running queries hold the commit off; the transport sends `wake` when they end
        else:
            self.release()
            self.decided = self.batch
            self.processed += self.records
            self.batches += 1
            self.phase = "idle"
            self._finish()

    def redrive(self) -> None:
        """A task of the module restarted or moved: a phase message to it, or its answer, may be lost.

        A decided batch is applied again where it was applying (a task that applied it answers
        done at once); an undecided one runs again as a new attempt over the same records, after
        every task has settled what it staged (`recover` applies a decided stage, drops an
        undecided one's writes), since a task that came back has lost its overlay."""
        if self.phase == "apply":
            self._broadcast(MbPhase(self.name, self.batch, "apply"))
        if self.phase in ("decided", "apply"):
            return  # a "decided" batch waits for queries; its apply reaches the new task too
        self._broadcast(MbPhase(self.name, self.decided, "recover"))
        if self.phase in ("process", "prepare"):
            self._broadcast(MbPhase(self.name, self.batch, "abort"))
            self.attempt += 1
            self._process()

    def _apply(self) -> None:
        self.committing = True
        self.phase, self.done = "apply", set()
        self._broadcast(MbPhase(self.name, self.batch, "apply"))

    def _finish(self) -> None:
        self.work_waiting = self.work_waiting or self.more
        self._maybe_start()

    def release(self) -> None:
        if self.committing:
            self.committing = False
            self.task.transport.end_commit()

    def status(self) -> dict[str, Any]:
        return {"processed": self.processed, "batches": self.batches, "decided": self.decided,
                "phase": self.phase, "paused": self.paused, "attempt": self.attempt,
                "time": self.task.clock.time_us() / 1e6}
