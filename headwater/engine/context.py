"""The handler context: what user code in a topology or step sees of its task.

One `Invocation` collects everything a handler does — PState writes in a Txn, hops and
appends in an outbox, its ack_return value — so the task can commit it all at once, or
throw it all away when the handler raises.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from headwater.engine import messages
from headwater.engine.definitions import MirrorDecl
from headwater.engine.messages import AppendRecord, Hop, TreeRef
from headwater.engine.query import mirrored
from headwater.errors import HopDepthExceeded, ReadOnlyError, SchemaError, WrongPartitionError
from headwater.pstate import View
from headwater.schema import task_for_key

if TYPE_CHECKING:
    from headwater.engine.runtime import ModuleRuntime, PStateRuntime

__all__ = ["FINISHED", "Context", "Invocation", "PStateExecutor", "RecordInfo", "TaskViews", "TxnSlot", "invocation_id"]

_logger = logging.getLogger("headwater.handler")

# Hops in one chain (a step hopping to a step that hops on...): past this, something hops without end.
HOP_DEPTH_MAX = 1_000


def invocation_id() -> int:
    # Non-zero random 64-bit ids: a tree is complete when the XOR of all acks returns to zero.
    return random.getrandbits(64) or 1


@dataclass(slots=True)
class RecordInfo:
    depot: str
    partition: int
    offset: int
    timestamp_us: int


class Invocation:
    """Everything one run of user code did, kept apart until the task commits or drops it."""

    __slots__ = ("topology", "tree", "record", "txn", "outbox", "children_xor", "has_children", "returned",
                 "deferred_appends", "depth")

    def __init__(self, topology: str, tree: TreeRef, record: RecordInfo, txn: Any, depth: int = 0) -> None:
        self.topology = topology
        self.depth = depth  # hops between the root invocation and this one
        self.tree = tree
        self.record = record
        self.txn = txn  # headwater.pstate.Txn
        self.outbox: list[tuple[int, bytes]] = []  # (task, encoded message), sent after commit
        self.children_xor = 0
        self.has_children = False
        self.returned: bytes | None = None
        # Set for microbatch invocations: ctx.append collects here and is sent when the batch commits.
        self.deferred_appends: list[tuple[int, bytes]] | None = None


class _Finished:
    """What a task's handler views read and write between invocations: nothing, with a clear error."""

    def __getattr__(self, name: str) -> Any:
        raise ReadOnlyError(
            "this PState view belongs to a handler invocation that has finished; call ctx.pstate(...) "
            "in the code that uses it instead of keeping the view"
        )


FINISHED: Any = _Finished()


class TxnSlot:
    """Where a task's PState views read and write: the running invocation's Txn (or committed state).

    A task runs one invocation at a time, so its views are built once and this one slot is
    pointed at each invocation's Txn in turn, instead of building views per call.
    """

    __slots__ = ("txn", "writer")

    def __init__(self, txn: Any = FINISHED) -> None:
        self.txn = txn
        self.writer = "stream"  # the kind of topology whose invocation runs: "stream" | "microbatch"


_NO_KEY = object()


class PStateExecutor:
    """Runs paths of a handler's PState view on its task, checking the task owns the key."""

    __slots__ = ("_pstate", "_layout", "_partitioned", "_keyed", "_slot", "_task_id", "_tasks", "_writable", "_owned",
                 "_writers")

    def __init__(self, pstate: PStateRuntime, slot: TxnSlot, task_id: int, tasks: int, *, writable: bool,
                 writers: Any = None) -> None:
        self._pstate = pstate
        self._writers = writers  # the module's WriterGuard: one kind of topology writes a PState
        self._layout = pstate.layout  # attributes read on every operation are kept flat: this is a hot path
        self._partitioned = pstate.decl.partitioned
        self._keyed = pstate.keyed
        self._slot = slot
        self._task_id = task_id
        self._tasks = tasks
        self._writable = writable
        self._owned: Any = _NO_KEY  # the last key found to be this task's: a view's operations repeat it

    def _check_owner(self, steps: tuple[Any, ...]) -> None:
        if self._tasks == 1:
            return
        if not self._partitioned:
            if self._task_id != 0:
                raise WrongPartitionError(
                    f"PState {self._pstate.name!r} is partitioned=False and lives on task 0, but this code runs on "
                    f"task {self._task_id}; continue there with ctx.hop_task(0, some_step, ...)"
                )
            return
        if not self._keyed or not steps or steps[0] is self._owned:
            return
        owner = task_for_key(steps[0], self._tasks)
        if owner == self._task_id:
            self._owned = steps[0]
        else:
            raise WrongPartitionError(
                f"key {steps[0]!r} of PState {self._pstate.name!r} belongs to task {owner}, but this code runs on "
                f"task {self._task_id}; continue on its task with ctx.hop({steps[0]!r}, some_step, ...)"
            )

    def read(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (),
             kwargs: dict[str, Any] | None = None) -> Any:
        self._check_owner(steps)
        return self._layout.read(self._slot.txn, steps, op, args, kwargs or {})

    def write(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> None:
        if not self._writable:
            raise ReadOnlyError(
                f"cannot {op} PState {self._pstate.name!r} here: queries and the steps they call only read; "
                "append to a depot and write from a topology instead"
            )
        self._check_owner(steps)
        self._writers.check(self._pstate.name, self._slot.writer)  # what the deploy-time source scan missed
        self._layout.write(self._slot.txn, steps, op, args, kwargs or {})


class TaskViews:
    """The root View of each PState of a module on one task, built once, over one TxnSlot."""

    __slots__ = ("_runtime", "_task_id", "slot", "_views", "_writable")

    def __init__(self, runtime: ModuleRuntime, task_id: int, slot: TxnSlot, *, writable: bool) -> None:
        self._runtime = runtime
        self._task_id = task_id
        self.slot = slot
        self._writable = writable
        self._views: dict[Any, View] = {}  # by the PState's declaration and by its name

    def view(self, decl_or_name: Any) -> View:
        try:
            return self._views[decl_or_name]
        except (KeyError, TypeError):
            pass
        pstate = self._runtime.pstate(decl_or_name)  # NotFound, naming the PStates there are
        executor = PStateExecutor(pstate, self.slot, self._task_id, self._runtime.tasks, writable=self._writable,
                                  writers=self._runtime.writers)
        view = View(executor, pstate.decl.schema, name=f"{self._runtime.name}.{pstate.name}")
        self._views[decl_or_name] = view  # a dict write is atomic: racing readers build equal views
        return view


class Context:
    """What a stream handler or step sees: its task's PStates, hops, appends, and the record it serves.

    Passed as the first argument of every topology handler and step:

        @bank.stream(transfers)
        def transfer(ctx: hw.Context, t: Transfer) -> bool:
            balance = ctx.pstate(funds)[t.from_id]       # a key this task owns
            ok = balance.get(0) >= t.amount
            if ok:
                balance.increment(-t.amount)
            ctx.hop(t.to_id, credit, t, ok)              # continue on the task owning t.to_id
            return ok                                    # to a full-ack appender

    `task_id` is the task running the code and `num_tasks` the module's task count.
    """

    __slots__ = ("_runtime", "_task", "_invocation", "_views", "task_id", "num_tasks")

    def __init__(self, runtime: ModuleRuntime, task: Any, invocation: Invocation | None, views: TaskViews) -> None:
        self._runtime = runtime
        self._task = task
        self._invocation = invocation
        self._views = views
        self.task_id: int = task.task_id
        self.num_tasks: int = runtime.tasks

    @property
    def depot(self) -> str | None:
        """The depot of the record being processed."""
        return self._invocation.record.depot if self._invocation else None

    @property
    def partition(self) -> int | None:
        """The depot partition of the record being processed."""
        return self._invocation.record.partition if self._invocation else None

    @property
    def offset(self) -> int | None:
        """The offset of the record being processed in its partition."""
        return self._invocation.record.offset if self._invocation else None

    @property
    def batch_id(self) -> int | None:
        """In a microbatch topology (its handler and the steps it hops to): the number of the batch
        being processed. It is the same on every attempt of the batch (a retry after a failure, a
        rerun after a crash), which runs over the same records, and grows by one with each batch
        that commits; None in stream topologies. Use it to make external writes idempotent.
        """
        invocation = self._invocation
        if invocation is None or invocation.deferred_appends is None:
            return None
        return invocation.tree.seq >> 32  # see microbatch.batch_tree: the batch above its attempt

    @property
    def topology(self) -> str | None:
        """The name of the topology running this code."""
        return self._invocation.topology if self._invocation else None

    @property
    def timestamp(self) -> datetime | None:
        """Append time of the record being processed (deterministic under replay, unlike the clock)."""
        if self._invocation is None:
            return None
        return datetime.fromtimestamp(self._invocation.record.timestamp_us / 1e6, tz=UTC)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (`headwater.handler`) whose records carry the module, topology, task and offset."""
        extra = {"module": self._runtime.name, "topology": self.topology, "task": self.task_id, "offset": self.offset}
        return logging.LoggerAdapter(_logger, extra)

    def pstate(self, decl_or_name: Any) -> Any:
        """A writable view of this task's part of a PState (its declaration or its name).

        Touching a top-level key that another task owns raises `WrongPartitionError`, naming the
        task and the hop to use. In a step called from a query the view only reads. A mirrored
        PState (`module.mirror_pstate`) gives a read-only view routed to the other module.
        """
        if isinstance(decl_or_name, MirrorDecl):
            return mirrored(self._runtime, self._task.transport, decl_or_name, "pstate")
        return self._views.view(decl_or_name)

    def resource(self, name: str) -> Any:
        """This task's object of resource `name` (declared with `module.resource(name, factory)`).

        Built once per task in the process hosting it, before the task runs any handler; an
        unknown name raises `NotFound` naming the declared ones. Steps that queries call may use
        it on other threads at the same time as handlers, so keep it thread-safe (a pool).

            ctx.resource("smtp").send_message(msg)
        """
        return self._task.resources.get(name)

    # ---- continuing elsewhere -------------------------------------------------------------
    def task_for(self, key: Any) -> int:
        """The task that owns `key` (of any PState or hop), e.g. to group keys into one hop per task."""
        return task_for_key(key, self.num_tasks)

    def hop(self, key: Any, step: Any, /, *args: Any, **kwargs: Any) -> None:
        """Run `step(ctx, *args, **kwargs)` on the task that owns `key`, after this invocation commits.

        The hop is part of the event's tree: a full ack waits for it. Hops from one task to
        another arrive in the order they were sent; arguments are pickled.
        """
        self._send_hop(task_for_key(key, self.num_tasks), step, args, kwargs)

    def hop_all(self, step: Any, /, *args: Any, **kwargs: Any) -> None:
        """Run `step` on every task of the module (this one included), like `hop`."""
        for task_id in range(self.num_tasks):
            self._send_hop(task_id, step, args, kwargs)

    def hop_task(self, task_id: int, step: Any, /, *args: Any, **kwargs: Any) -> None:
        """Run `step` on task `task_id`, like `hop` (e.g. task 0 for a `partitioned=False` PState)."""
        if not isinstance(task_id, int) or not 0 <= task_id < self.num_tasks:
            raise ValueError(f"hop_task: task {task_id!r} does not exist; tasks are 0..{self.num_tasks - 1}")
        self._send_hop(task_id, step, args, kwargs)

    def _outbox(self, action: str) -> Invocation:
        if self._invocation is None:
            raise ReadOnlyError(f"cannot {action} here: only stream topologies and the steps they hop to can")
        return self._invocation

    def _send_hop(self, task_id: int, step: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        invocation = self._outbox("hop")
        step_decl = self._runtime.step(step)
        if invocation.depth >= HOP_DEPTH_MAX:
            raise HopDepthExceeded(
                f"hop to step {step_decl.name!r} would be hop {invocation.depth + 1} of one chain (limit "
                f"{HOP_DEPTH_MAX}); steps keep hopping on without end. Stop the chain, or continue it through "
                "a depot (ctx.append), which starts a new record"
            )
        try:
            payload = messages.dumps((args, kwargs))
        except Exception as e:
            raise SchemaError(f"arguments of hop to step {step_decl.name!r} cannot be serialized: {e}") from None
        child = invocation_id()
        record = invocation.record
        hop = Hop(invocation.tree, child, invocation.topology, step_decl.name, payload,
                  record.depot, record.partition, record.offset, record.timestamp_us, invocation.depth + 1)
        invocation.outbox.append((task_id, messages.encode(hop)))
        invocation.children_xor ^= child
        invocation.has_children = True

    def append(self, depot: Any, event: Any) -> None:
        """Append to a depot of this module once this invocation commits (at-least-once)."""
        invocation = self._outbox("append")
        runtime = self._runtime.depot(getattr(depot, "name", depot))
        data, validated = runtime.codec.encode(event)
        partition = self._task.partition_for(runtime, validated)
        task_id = runtime.task_of_partition(partition)
        if invocation.deferred_appends is not None:
            record = AppendRecord(runtime.depot_id, partition, data, "none")
            invocation.deferred_appends.append((task_id, messages.encode(record)))
            return
        child = invocation_id()
        record = AppendRecord(runtime.depot_id, partition, data, "none", tree=invocation.tree, invocation=child)
        invocation.outbox.append((task_id, messages.encode(record)))
        invocation.children_xor ^= child
        invocation.has_children = True

    def ack_return(self, value: Any) -> None:
        """Set what a full-ack appender receives for this topology, from anywhere in the event's tree.

        The last call wins; without one, the root handler's return value is used. Stream
        topologies only.
        """
        invocation = self._outbox("ack_return")
        if invocation.deferred_appends is not None:
            raise ReadOnlyError("ack_return is for stream topologies: no appender waits on a microbatch")
        try:
            invocation.returned = messages.dumps(value)
        except Exception as e:
            raise SchemaError(f"ack_return value cannot be serialized: {e}") from None

    def unique_id(self) -> int:
        """A module-wide unique, durable 64-bit integer (the task id in the high bits, a counter below)."""
        if self._invocation is None:
            raise ReadOnlyError("unique_id() is for topologies: it advances a durable counter")
        return self._task.next_unique_id()

    def __repr__(self) -> str:
        return f"<Context {self._runtime.name} task={self.task_id} topology={self.topology} offset={self.offset}>"

