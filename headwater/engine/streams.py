"""Stream processing on one task: each topology's cursor over its depot partitions, and invocations.

`Streams` advances every stream topology over the records appended to this task's partitions
(`pump`), runs root invocations and the hops that reach this task, and adds each invocation's
effects to the round: its PState writes merged into the round's, its progress, its hops and
appends (sent when the round commits), or its dead letter. A root that spawned hops keeps a
pending entry until its tree completes, so that a crash can send them again (`resend`).

An `async def` handler or step is started like any invocation (records of a partition start in
depot order), then awaits on the host's event loop (`AwaitHost`) while the task goes on with
other records and hops; its outcome is committed in the round after it finishes, so invocations
may finish in another order than they started. A topology's progress never passes a record that
has not finished: after a crash, the records from the stored progress on run again, including
any that finished out of order (at-least-once, as for every stream record). At most
`max_awaiting` invocations of a topology await at once; records wait in their depot and hops in
`_held_hops` until one finishes. The host counts the held hops' bytes as its inbox's
(`RoundOutcome.held_bytes`), so the bound on fan-out (`Transport.congested`) covers them too.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from headwater.engine import messages
from headwater.engine.appends import Appends
from headwater.engine.awaits import AWAIT_TIMEOUT_S_DEFAULT, MAX_AWAITING_DEFAULT, AwaitHost, Stepped
from headwater.engine.context import FINISHED, Context, Invocation, RecordInfo, TaskViews, TxnSlot, invocation_id
from headwater.engine.definitions import RETRY_BACKOFF_TOTAL_MAX_S, Retry, StreamDecl
from headwater.engine.messages import Hop, TreeAck, TreeRef
from headwater.engine.meta import (
    DEPOT_KEY,
    I64,
    U64,
    DeadLetterEntry,
    PendingTree,
    dead_key,
    depot_key,
    meta_encoder,
    pending_key,
    progress_key,
)
from headwater.engine.resources import TaskResources
from headwater.engine.rounds import Reply, Round, UniqueIds
from headwater.engine.runtime import DepotRuntime, ModuleRuntime
from headwater.engine.transport import Clock, Transport
from headwater.engine.trees import Trees, TreeState
from headwater.errors import HeadwaterError
from headwater.pstate import Txn
from headwater.storage import Batch, Store

__all__ = ["PUMP_RECORDS_MAX", "PUMP_TIME_MAX_S", "ROUND_SEND_BYTES_MAX", "Outcome", "Streams"]

_log = logging.getLogger("headwater.task")

PUMP_RECORDS_MAX = 256  # records processed per round before the inbox is looked at again
PUMP_TIME_MAX_S = 0.02  # ... or this much time, so new appends are made durable while handlers are slow
ROUND_SEND_BYTES_MAX = 16 * 1024 * 1024  # a round starts no more records once its handlers sent this much
HOP_FIXED_BYTES = 64  # what a hop's message holds besides its arguments and names, about


class Outcome:
    """What one invocation of user code came to: its effects, its result or error, its attempts."""

    __slots__ = ("attempts", "error", "invocation", "result")

    def __init__(self, invocation: Invocation, result: bytes | None, error: tuple[str, str] | None,
                 attempts: int) -> None:
        self.invocation = invocation
        self.result = result
        self.error = error  # (exception type, formatted traceback)
        self.attempts = attempts


class _Awaiting:
    """An invocation of an `async def` handler or step, from its start to its commit."""

    __slots__ = ("attempts", "call", "depth", "finish", "info", "invocation", "retry", "timeout_s", "topology", "tree")

    def __init__(self, topology: str, tree: TreeRef, info: RecordInfo, call: Callable[[Context], Any], retry: Retry,
                 depth: int, timeout_s: float, finish: Callable[[Outcome], None]) -> None:
        self.topology = topology
        self.tree = tree
        self.info = info
        self.call = call
        self.retry = retry
        self.depth = depth
        self.timeout_s = timeout_s
        self.finish = finish  # commits the outcome into the round (a root's or a hop's way)
        self.invocation: Invocation | None = None  # the attempt running now
        self.attempts = 0


class _CurrentInvocation:
    """Points the task's views at one awaiting invocation's Txn while a step of its coroutine runs."""

    __slots__ = ("_slot", "_txn")

    def __init__(self, slot: TxnSlot, txn: Txn) -> None:
        self._slot = slot
        self._txn = txn

    def __enter__(self) -> None:
        self._slot.txn = self._txn
        self._slot.writer = "stream"

    def __exit__(self, *_: object) -> None:
        self._slot.txn = FINISHED


class Streams:
    def __init__(self, runtime: ModuleRuntime, task_id: int, store: Store, transport: Transport, clock: Clock,
                 round_: Round, appends: Appends, trees: Trees, unique: UniqueIds, resources: TaskResources) -> None:
        self.runtime = runtime
        self.task_id = task_id
        self._store = store
        self._transport = transport
        self.transport = transport  # for handlers' Context: mirrors read through its peers
        self._clock = clock
        self._round = round_
        self._appends = appends
        self._trees = trees
        self._unique = unique
        self.resources = resources  # what ctx.resource(name) hands out
        # Handlers' views run on the invocation running now (one TxnSlot pointed at each in turn).
        self._views = TaskViews(runtime, task_id, TxnSlot(), writable=True)
        self._subscriptions = [
            (stream, depot)
            for depot in runtime.depots.values()
            if depot.partitions > task_id
            for stream in depot.subscribers
        ]
        self.cursors: dict[tuple[str, int], int] = {}
        # Trees a crash cut short: (topology, pending key, offset, the stored pending tree).
        self._replays: deque[tuple[str, bytes, int, bytes]] = deque()
        self.congested = False  # the last pump started no records: the module's inboxes were full
        # Async handlers and steps: the host that runs their awaits (set by the host), how many of
        # each topology await, the records each topology started and has not committed in order,
        # the outcomes waiting for a round, and hops waiting for a free slot of their topology.
        self.await_host: AwaitHost | None = None
        self._async_streams = {name for name, stream in runtime.streams.items()
                               if inspect.iscoroutinefunction(stream.fn)}
        self._async_steps: dict[str, bool] = {}
        self._awaiting: dict[str, int] = {}
        self._started: dict[tuple[str, int], tuple[deque[int], set[int]]] = {}
        self._completed: deque[tuple[_Awaiting, Any, BaseException | None]] = deque()
        self._held_hops: deque[tuple[Hop, DeadLetterEntry | None]] = deque()
        self.held_bytes = 0  # about what the held hops took in the inbox (the host counts them there)

    # ---- recovery ----------------------------------------------------------------------------
    def recover(self, batch: Batch) -> None:
        """Set each topology's cursor from stored progress and queue the trees a crash cut short."""
        for stream, depot in self._subscriptions:
            key = progress_key(stream.name, depot.depot_id)
            stored = self._store.get("meta", key)
            if stored is None:
                cursor = self.initial_cursor(stream, depot)
                batch.put("meta", key, U64.pack(cursor))  # pinned now, so a restart cannot move "end"
            else:
                cursor = U64.unpack(stored)[0]
            self.cursors[(stream.name, depot.depot_id)] = cursor
            prefix = b"pending/" + stream.name.encode() + b"/" + DEPOT_KEY.pack(depot.depot_id, 0)[:2]
            for pending, stored_tree in self._store.iterate("meta", prefix, prefix + b"\xff" * 8):
                offset = DEPOT_KEY.unpack(pending[-10:])[1]
                if offset >= cursor:  # an async root that finished out of order: the record runs again
                    batch.delete("meta", pending)
                    continue
                self.queue_resend(stream.name, pending, offset, stored_tree)

    def queue_resend(self, topology: str, pending: bytes, offset: int, stored_tree: bytes) -> None:
        """Resend a cut-short tree's hops and appends in an early round (offset -1: no record's tree)."""
        self._replays.append((topology, pending, offset, stored_tree))

    def initial_cursor(self, stream: Any, depot: DepotRuntime) -> int:
        start = stream.start_from
        end = self._appends.ends[depot.depot_id]
        if start == "beginning":
            return 0
        if isinstance(start, dict):
            return min(max(0, start.get(self.task_id, end)), end)
        if isinstance(start, datetime):
            threshold_us = int(start.timestamp() * 1e6)
            for key, value in self._store.iterate("depot", depot_key(depot.depot_id, 0),
                                                  depot_key(depot.depot_id + 1, 0)):
                if I64.unpack(value[:8])[0] >= threshold_us:
                    return DEPOT_KEY.unpack(key)[1]
        return end

    # ---- rounds ------------------------------------------------------------------------------
    def pump(self) -> bool:
        """Advance topologies over their backlog; True when work remains for the next round.

        No record starts while the module's inboxes are congested: what a record's handler sends
        (hops, appends) would only queue up in memory behind them.
        """
        budget = PUMP_RECORDS_MAX
        # Before the congestion check: what was already taken must go on, or a task whose held
        # hops fill its own inbox's share would never start them.
        if self._completed:  # first, so that their slots are free for the records below
            budget -= self._commit_awaited(budget)
        while self._held_hops and budget and self._has_slot(self._held_hops[0][0].topology):
            hop, dead = self._held_hops.popleft()
            self.held_bytes -= _held_size(hop)
            self.run_hop(hop, dead=dead, held=True)
            budget -= 1
        self.congested = self._transport.congested()
        if self.congested:
            return True
        round_ = self._round
        monotonic = self._clock.monotonic
        deadline = monotonic() + PUMP_TIME_MAX_S
        while self._replays and budget and round_.outgoing_bytes < ROUND_SEND_BYTES_MAX:
            self._trees.resend(*self._replays.popleft())
            budget -= 1
        ends, cursors, read = self._appends.ends, self.cursors, self._appends.read
        awaiting = self._awaiting
        for stream, depot in self._subscriptions:
            key = (stream.name, depot.depot_id)
            end = ends[depot.depot_id]
            awaits = stream.name in self._async_streams
            while cursors[key] < end and budget:
                if awaits and awaiting.get(stream.name, 0) >= stream.max_awaiting:
                    break  # started again when one of its invocations finishes (the host wakes the task)
                offset = cursors[key]
                timestamp_us, event = read(depot.depot_id, offset, consume=True)
                self.run_root(stream, depot, offset, timestamp_us, event, progress=True)
                cursors[key] = offset + 1
                budget -= 1
                if monotonic() >= deadline:
                    return True  # slow handlers: commit what ran and look at the inbox again
                if round_.outgoing_bytes >= ROUND_SEND_BYTES_MAX:
                    return True  # big fan-out: send it, and see whether the receivers keep up
        return budget == 0 or bool(self._completed)

    def run_root(self, stream: StreamDecl, depot: DepotRuntime, offset: int, timestamp_us: int, event_data: bytes, *,
                 progress: bool, dead: DeadLetterEntry | None = None, reply: Reply | None = None) -> None:
        own = invocation_id()
        record_state = self._appends.records.get((depot.depot_id, offset)) if progress else None
        if record_state is not None and stream.name in record_state.done:
            record_state = None  # its tree completed out of order before a crash: that result stands
        state = TreeState(stream.name, own, record_state, reply=reply, partition=self.task_id, offset=offset)
        tree = self._trees.new(state)
        info = RecordInfo(depot.name, self.task_id, offset, timestamp_us)

        def call(ctx: Context) -> Any:
            return stream.fn(ctx, depot.codec.decode(event_data))

        if stream.name in self._async_streams:
            if progress:
                order, _ = self._started.setdefault((stream.name, depot.depot_id), (deque(), set()))
                order.append(offset)
            finish = partial(self._finish_root, stream, depot, offset, progress, state, tree, own, info, dead)
            self._start_awaiting(_Awaiting(stream.name, tree, info, call, stream.retry, 0, stream.await_timeout_s,
                                           finish))
            return
        self._finish_root(stream, depot, offset, progress, state, tree, own, info, dead,
                          self.invoke(stream.name, tree, info, call, stream.retry))

    def _finish_root(self, stream: StreamDecl, depot: DepotRuntime, offset: int, progress: bool, state: TreeState,
                     tree: TreeRef, own: int, info: RecordInfo, dead: DeadLetterEntry | None, outcome: Outcome) -> None:
        if progress:
            key = (stream.name, depot.depot_id)
            started = self._started.get(key)
            if started is None:
                self._round.progress[key] = offset + 1
            else:  # never past a record still awaiting: a crash runs it again
                order, finished = started
                finished.add(offset)
                while order and order[0] in finished:
                    finished.discard(order.popleft())
                self._round.progress[key] = order[0] if order else self.cursors[key]
        if outcome.invocation.has_children:  # kept until the tree completes, so a crash can resend it
            state.pending_key = pending_key(stream.name, depot.depot_id, offset)
            pending = PendingTree(outcome.invocation.outbox, outcome.result, outcome.invocation.returned)
            self._round.batch.put("meta", state.pending_key, meta_encoder.encode(pending))
        state.root_result = outcome.result
        self._commit(outcome, "record", info, dead=dead)
        error_type, error = outcome.error or (None, None)
        self._trees.settle(tree.seq, state, own ^ outcome.invocation.children_xor, outcome.invocation.returned,
                           error_type, error)

    def run_hop(self, hop: Hop, *, dead: DeadLetterEntry | None = None, held: bool = False) -> None:
        """Run a hop that reached this task (`held`: one that waited in `_held_hops` for a slot)."""
        info = RecordInfo(hop.depot, hop.partition, hop.offset, hop.timestamp_us)
        stream = self.runtime.streams.get(hop.topology)
        retry = stream.retry if stream is not None else Retry.NONE

        def call(ctx: Context) -> Any:
            step = self.runtime.step(hop.step)
            args, kwargs = messages.loads(hop.args)
            return step.fn(ctx, *args, **kwargs)

        if self._step_awaits(hop.step):
            if (self._held_hops and not held) or not self._has_slot(hop.topology):
                self._held_hops.append((hop, dead))  # in arrival order, behind those already held
                self.held_bytes += _held_size(hop)
                return
            timeout_s = stream.await_timeout_s if stream is not None else AWAIT_TIMEOUT_S_DEFAULT
            self._start_awaiting(_Awaiting(hop.topology, hop.tree, info, call, retry, hop.depth, timeout_s,
                                           partial(self._finish_hop, hop, info, dead)))
            return
        self._finish_hop(hop, info, dead, self.invoke(hop.topology, hop.tree, info, call, retry, depth=hop.depth))

    def _finish_hop(self, hop: Hop, info: RecordInfo, dead: DeadLetterEntry | None, outcome: Outcome) -> None:
        outcome.result = None  # a step's return value goes nowhere; ack_return carries values back
        self._commit(outcome, "hop", info, dead=dead, hop=hop)
        ack = TreeAck(hop.tree, hop.invocation ^ outcome.invocation.children_xor, outcome.invocation.returned,
                      *(outcome.error or (None, None)))
        self._trees.send_ack(ack)

    def retry_dead_letter(self, entry: DeadLetterEntry, reply: Reply) -> None:
        """Run a dead-lettered root or hop again; `reply` hears how it went."""
        if entry.kind == "record":
            stream = self.runtime.streams[entry.topology]
            depot = self.runtime.depot(entry.depot)
            timestamp_us, event = self._appends.read(depot.depot_id, entry.offset, consume=False)
            self.run_root(stream, depot, entry.offset, timestamp_us, event, progress=False, dead=entry, reply=reply)
            return
        own = invocation_id()
        state = TreeState(entry.topology, own, None, reply=reply, partition=entry.partition, offset=entry.offset)
        tree = self._trees.new(state)
        hop = Hop(tree, own, entry.topology, entry.step or "", entry.args or b"", entry.depot, entry.partition,
                  entry.offset, entry.timestamp_us)
        self.run_hop(hop, dead=entry)

    # ---- invocations -------------------------------------------------------------------------
    def invoke(self, topology: str, tree: TreeRef, info: RecordInfo, call: Callable[[Context], Any], retry: Retry,
               *, base: Any = None, deferred: bool = False, depth: int = 0) -> Outcome:
        """Run user code once (or per `retry`) over a fresh Txn on `base` (default: the round's writes).

        `deferred`: a microbatch invocation (its appends wait for the batch's commit); `depth`: the
        hops between its tree's root and it."""
        attempt = 0
        slept_s = 0.0  # the task waits out these back-offs: at most RETRY_BACKOFF_TOTAL_MAX_S in all
        while True:
            # The invocation's writes sit over the round's, so it reads what earlier events wrote.
            invocation = Invocation(topology, tree, info, self._round.new_txn(base), depth)
            if deferred:
                invocation.deferred_appends = []
            slot = self._views.slot
            slot.txn = invocation.txn
            slot.writer = "microbatch" if deferred else "stream"
            try:
                result = call(Context(self.runtime, self, invocation, self._views))
                if inspect.iscoroutine(result):
                    result.close()
                    raise TypeError(
                        f"{topology!r} got a coroutine from code that cannot await here (a microbatch, or a "
                        "function that is not itself `async def` but returns one); declare the stream handler "
                        "or step `async def`, or await nothing in a microbatch")
                return Outcome(invocation, messages.dumps(result), None, attempt + 1)
            except Exception as e:
                if attempt >= retry.times:
                    invocation.outbox.clear()
                    invocation.children_xor = 0
                    invocation.has_children = False
                    invocation.returned = None
                    return Outcome(invocation, None, (_error_name(e), traceback.format_exc()), attempt + 1)
            finally:
                slot.txn = FINISHED  # a view kept past its invocation fails clearly instead of writing nowhere
            delay_s = min(retry.delay_s(attempt), RETRY_BACKOFF_TOTAL_MAX_S - slept_s)
            self._clock.sleep(delay_s)
            slept_s += delay_s
            attempt += 1

    # ---- invocations that await ---------------------------------------------------------------
    def _step_awaits(self, name: str) -> bool:
        known = self._async_steps.get(name)
        if known is None:
            step = self.runtime.steps.get(name)
            known = self._async_steps[name] = step is not None and inspect.iscoroutinefunction(step.fn)
        return known

    def _has_slot(self, topology: str) -> bool:
        stream = self.runtime.streams.get(topology)
        return self._awaiting.get(topology, 0) < (stream.max_awaiting if stream is not None else MAX_AWAITING_DEFAULT)

    def _start_awaiting(self, entry: _Awaiting, delay_s: float = 0.0) -> None:
        """Ask the host to begin an attempt of `entry` (after `delay_s`: a retry's back-off)."""
        if entry.attempts == 0:
            self._awaiting[entry.topology] = self._awaiting.get(entry.topology, 0) + 1
        entry.attempts += 1
        entry.invocation = None
        if self.await_host is None:
            self._completed.append((entry, None, TypeError(f"{entry.topology!r}: this task's host runs no async "
                                                           "handlers")))
            return
        self.await_host.spawn(partial(self._begin, entry), delay_s=delay_s, timeout_s=entry.timeout_s,
                              done=partial(self._awaited, entry))

    def _begin(self, entry: _Awaiting) -> Awaitable[Any]:
        """The host's `start`, under the task's turn: call the handler over a fresh Txn for its coroutine.

        Called only when the await begins, so an attempt the host drops before (a stop during a
        retry's back-off) leaves no coroutine behind that was never awaited."""
        invocation = entry.invocation = Invocation(entry.topology, entry.tree, entry.info, Txn(self._round.live),
                                                   entry.depth)
        slot = self._views.slot
        slot.txn, slot.writer = invocation.txn, "stream"
        try:
            awaitable = entry.call(Context(self.runtime, self, invocation, self._views))
        finally:
            slot.txn = FINISHED
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"{entry.topology!r}: an async handler or step returned {type(awaitable).__name__}, "
                            "not a coroutine")
        return Stepped(awaitable, _CurrentInvocation(slot, invocation.txn))

    def _awaited(self, entry: _Awaiting, result: Any, error: BaseException | None) -> None:
        """The host's `done`, under the task's turn between two rounds: commit it into the coming round.

        Its writes join the round's Txn now rather than in the next round's pump, so that what
        the other awaiting invocations read from here on includes them."""
        self._finish_awaited(entry, result, error)

    def _commit_awaited(self, budget: int) -> int:
        """Commit up to `budget` invocations that could not start (no host for awaits); how many were taken."""
        taken = 0
        while self._completed and taken < budget:
            self._finish_awaited(*self._completed.popleft())
            taken += 1
        return taken

    def _finish_awaited(self, entry: _Awaiting, result: Any, error: BaseException | None) -> None:
        """Start a failed invocation's retry, or add its outcome to the round (the same as a sync one's)."""
        if error is not None and entry.attempts <= entry.retry.times:
            self._start_awaiting(entry, entry.retry.delay_s(entry.attempts - 1))
            return
        self._awaiting[entry.topology] -= 1
        invocation = entry.invocation
        if invocation is None:  # it failed before its handler was called (no host for awaits)
            invocation = entry.invocation = Invocation(entry.topology, entry.tree, entry.info, None, entry.depth)
        if error is None:
            try:
                outcome = Outcome(invocation, messages.dumps(result), None, entry.attempts)
            except Exception as e:
                error = e
        if error is not None:
            invocation.outbox.clear()
            invocation.children_xor = 0
            invocation.has_children = False
            invocation.returned = None
            text = "".join(traceback.format_exception(error))
            outcome = Outcome(invocation, None, (_error_name(error), text), entry.attempts)
        entry.finish(outcome)

    def _commit(self, outcome: Outcome, kind: str, info: RecordInfo, *,
                dead: DeadLetterEntry | None, hop: Hop | None = None) -> None:
        """Add an invocation's effects (or its dead letter) to the round; what it spawned leaves after."""
        invocation = outcome.invocation
        batch = self._round.batch
        if outcome.error is None:
            invocation.txn.merge_into(self._round.txn)
            if dead is not None:
                batch.delete("meta", dead_key(invocation.topology, dead.id))
        else:
            entry = DeadLetterEntry(
                dead.id if dead else self._unique.next(), invocation.topology, kind, self.task_id, info.depot,
                info.partition, info.offset, info.timestamp_us, outcome.error[0], outcome.error[1],
                outcome.attempts + (dead.attempts if dead else 0),
                hop.step if hop else None, hop.args if hop else None,
            )
            batch.put("meta", dead_key(invocation.topology, entry.id), meta_encoder.encode(entry))
            _log.warning("%s.%s: %s at %s/%s offset %s went to the dead letters: %s", self.runtime.name,
                         invocation.topology, kind, info.depot, info.partition, info.offset, outcome.error[0])
        self._round.send_all(invocation.outbox)

    # ---- what a handler's Context asks of its task -------------------------------------------
    def next_unique_id(self) -> int:
        return self._unique.next()

    @staticmethod
    def partition_for(depot: DepotRuntime, event: Any) -> int:
        return depot.partition_for(event)


def _held_size(hop: Hop) -> int:
    """About the bytes of a held hop's message (its arguments and names, plus its fixed fields)."""
    return len(hop.args) + len(hop.step) + len(hop.topology) + len(hop.depot) + HOP_FIXED_BYTES


def _error_name(error: BaseException) -> str:
    if isinstance(error, HeadwaterError):
        return type(error).__name__
    return f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins.")
