"""The handler context: what user code in a topology or step sees of its task.

One `Invocation` collects everything a handler does — PState writes in a Txn, hops and
appends in an outbox, its ack_return value — so the task can commit it all at once, or
throw it all away when the handler raises.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from headwater.engine import messages
from headwater.engine.messages import AppendRecord, Hop, TreeRef
from headwater.pstate import View
from headwater.schema import task_for_key
from headwater.errors import ReadOnlyError, SchemaError, WrongPartitionError

if TYPE_CHECKING:
    from headwater.engine.runtime import ModuleRuntime, PStateRuntime

__all__ = ["Context", "Invocation", "PStateExecutor", "RecordInfo", "invocation_id"]

_logger = logging.getLogger("headwater.handler")


def invocation_id() -> int:
    # Non-zero random 64-bit ids: a tree is complete when the XOR of all acks returns to zero.
    return random.getrandbits(64) or 1


@dataclass(slots=True)
class RecordInfo:
    depot: str
    partition: int
    offset: int
    timestamp_us: int


@dataclass
class Invocation:
    topology: str
    tree: TreeRef | None
    record: RecordInfo
    txn: Any  # headwater.pstate.Txn
    outbox: list[tuple[int, bytes]] = field(default_factory=list)  # (task, encoded message), sent after commit
    children_xor: int = 0
    has_children: bool = False
    returned: bytes | None = None
    # Set for microbatch invocations: ctx.append collects here and is sent when the batch commits.
    deferred_appends: list[tuple[int, bytes]] | None = None


class PStateExecutor:
    """Runs paths of a handler's PState view on its task, checking the task owns the key."""

    __slots__ = ("_pstate", "_layout", "_partitioned", "_keyed", "_reader", "_task_id", "_tasks", "_writable")

    def __init__(self, pstate: PStateRuntime, reader: Any, task_id: int, tasks: int, *, writable: bool) -> None:
        self._pstate = pstate
        self._layout = pstate.layout  # attributes read on every operation are kept flat: this is a hot path
        self._partitioned = pstate.decl.partitioned
        self._keyed = pstate.keyed
        self._reader = reader
        self._task_id = task_id
        self._tasks = tasks
        self._writable = writable

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
        if not self._keyed or not steps:
            return
        owner = task_for_key(steps[0], self._tasks)
        if owner != self._task_id:
            raise WrongPartitionError(
                f"key {steps[0]!r} of PState {self._pstate.name!r} belongs to task {owner}, but this code runs on "
                f"task {self._task_id}; continue on its task with ctx.hop({steps[0]!r}, some_step, ...)"
            )

    def read(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        self._check_owner(steps)
        return self._layout.read(self._reader, steps, op, args, kwargs or {})

    def write(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        if not self._writable:
            raise ReadOnlyError(
                f"cannot {op} PState {self._pstate.name!r} here: queries and the steps they call only read; "
                "append to a depot and write from a topology instead"
            )
        self._check_owner(steps)
        self._layout.write(self._reader, steps, op, args, kwargs or {})


class Context:
    """What a stream handler or step sees: its task's PStates, hops, appends, and the record it serves."""

    def __init__(self, runtime: ModuleRuntime, task: Any, invocation: Invocation | None, reader: Any, *, writable: bool) -> None:
        self._runtime = runtime
        self._task = task
        self._invocation = invocation
        self._reader = reader
        self._writable = writable
        self.task_id: int = task.task_id
        self.num_tasks: int = runtime.tasks
        record = invocation.record if invocation else None
        self.depot: str | None = record.depot if record else None
        self.partition: int | None = record.partition if record else None
        self.offset: int | None = record.offset if record else None
        self._timestamp_us = record.timestamp_us if record else None
        self.topology: str | None = invocation.topology if invocation else None

    @property
    def timestamp(self) -> datetime | None:
        """Append time of the record being processed (deterministic under replay, unlike the clock)."""
        if self._timestamp_us is None:
            return None
        return datetime.fromtimestamp(self._timestamp_us / 1e6, tz=timezone.utc)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        extra = {"module": self._runtime.name, "topology": self.topology, "task": self.task_id, "offset": self.offset}
        return logging.LoggerAdapter(_logger, extra)

    def pstate(self, decl_or_name: Any) -> Any:
        pstate = self._runtime.pstate(decl_or_name)
        executor = PStateExecutor(pstate, self._reader, self.task_id, self.num_tasks, writable=self._writable)
        return View(executor, pstate.decl.schema, name=f"{self._runtime.name}.{pstate.name}")

    # ---- continuing elsewhere -------------------------------------------------------------
    def task_for(self, key: Any) -> int:
        """The task that owns `key` (of any PState or hop), e.g. to group keys into one hop per task."""
        return task_for_key(key, self.num_tasks)

    def hop(self, key: Any, step: Any, /, *args: Any, **kwargs: Any) -> None:
        self._send_hop(task_for_key(key, self.num_tasks), step, args, kwargs)

    def hop_all(self, step: Any, /, *args: Any, **kwargs: Any) -> None:
        for task_id in range(self.num_tasks):
            self._send_hop(task_id, step, args, kwargs)

    def hop_task(self, task_id: int, step: Any, /, *args: Any, **kwargs: Any) -> None:
        if not isinstance(task_id, int) or not 0 <= task_id < self.num_tasks:
            raise ValueError(f"hop_task: task {task_id!r} does not exist; tasks are 0..{self.num_tasks - 1}")
        self._send_hop(task_id, step, args, kwargs)

    def _outbox(self, action: str) -> Invocation:
        if self._invocation is None or self._invocation.tree is None:
            raise ReadOnlyError(f"cannot {action} here: only stream topologies and the steps they hop to can")
        return self._invocation

    def _send_hop(self, task_id: int, step: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        invocation = self._outbox("hop")
        step_decl = self._runtime.step(step)
        try:
            payload = messages.dumps((args, kwargs))
        except Exception as e:
            raise SchemaError(f"arguments of hop to step {step_decl.name!r} cannot be serialized: {e}") from None
        child = invocation_id()
        record = invocation.record
        hop = Hop(invocation.tree, child, invocation.topology, step_decl.name, payload,
                  record.depot, record.partition, record.offset, record.timestamp_us)
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
        invocation = self._outbox("ack_return")
        if invocation.deferred_appends is not None:
            raise ReadOnlyError("ack_return is for stream topologies: no appender waits on a microbatch")
        try:
            invocation.returned = messages.dumps(value)
        except Exception as e:
            raise SchemaError(f"ack_return value cannot be serialized: {e}") from None

    def unique_id(self) -> int:
        if not self._writable:
            raise ReadOnlyError("unique_id() is for topologies: it advances a durable counter")
        return self._task.next_unique_id()

    def __repr__(self) -> str:
        return f"<Context {self._runtime.name} task={self.task_id} topology={self.topology} offset={self.offset}>"

