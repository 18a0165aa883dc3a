"""Reads of a task's committed state: PState paths, depot records, dead letters, progress, steps.

`Reads.serve` answers one read request. It reads only what rounds have committed (RocksDB reads
are safe beside the round that writes, and every batch is atomic), so a host may serve reads
while a round runs; in process they run in the caller's thread.
"""

from __future__ import annotations

import inspect
from typing import Any

from headwater.engine import messages
from headwater.engine.appends import depot_records, stored_start
from headwater.engine.context import Context, TaskViews, TxnSlot
from headwater.engine.meta import U64, dead_decoder
from headwater.engine.query import query_decl, run_query_body
from headwater.engine.resources import TaskResources
from headwater.engine.runtime import ModuleRuntime
from headwater.engine.transport import Transport
from headwater.errors import NotFound
from headwater.storage import Store

__all__ = ["READS", "Reads"]

READS = ("pstate", "depot_read", "depot_end", "depot_bounds", "dead_letters", "mb_status", "progress", "migrations",
         "unfinished", "step", "query", "resources")


class Reads:
    def __init__(self, runtime: ModuleRuntime, task_id: int, store: Store, transport: Transport,
                 coordinators: dict[str, Any], context_host: Any, stored_end: Any, resources: TaskResources,
                 migrations: Any) -> None:
        self._runtime = runtime
        self._task_id = task_id
        self._store = store
        self._transport = transport
        self._coordinators = coordinators
        self._context_host = context_host  # what a step's Context asks of its task
        self._stored_end = stored_end
        self._resources = resources
        self._migrations = migrations  # () -> this task's PState migrations and their progress
        self._reader = store.reader("pstate")
        # Steps that queries call read committed state through views that cannot write.
        self._views = TaskViews(runtime, task_id, TxnSlot(self._reader), writable=False)

    def serve(self, request: tuple[Any, ...]) -> Any:
        kind = request[0]
        if kind == "pstate":
            _, name, steps, op, args, kwargs = request
            return self._runtime.pstate(name).layout.read(self._reader, steps, op, args, kwargs)
        if kind == "depot_read":
            _, depot_id, start, stop = request
            first = stored_start(self._store, depot_id)
            if start < first:
                depot = self._runtime.depots_by_id[depot_id]
                raise _trimmed(f"depot {self._runtime.name}.{depot.name}: the records of partition {self._task_id} "
                               f"below offset {first} were trimmed by its retention; read from {first} "
                               "(partition_info(p).start_offset)", start)
            return depot_records(self._store, depot_id, start, stop)
        if kind == "depot_end":
            return self._stored_end(request[1])
        if kind == "depot_bounds":  # (first offset still stored, next offset to append)
            return stored_start(self._store, request[1]), self._stored_end(request[1])
        if kind == "dead_letters":
            prefix = b"dead/" + request[1].encode() + b"/"
            return [dead_decoder.decode(v) for _, v in self._store.iterate("meta", prefix, prefix + b"\xff" * 9)]
        if kind == "mb_status":
            coordinator = self._coordinators.get(request[1])
            if coordinator is None:
                raise NotFound("microbatch topology", str(request[1]), self._coordinators,
                               where=f"module {self._runtime.name!r}")
            return coordinator.status()
        if kind == "progress":
            return self.stored_progress()
        if kind == "migrations":
            return self._migrations()
        if kind == "unfinished":  # trees rooted here whose hops or appends are not all acknowledged yet
            return sum(1 for _ in self._store.iterate("meta", b"pending/", b"pending0"))
        if kind == "step":
            _, step_name, payload = request
            args, kwargs = messages.loads(payload)
            step = self._runtime.step(step_name)
            result = step.fn(Context(self._runtime, self._context_host, None, self._views), *args, **kwargs)
            if inspect.iscoroutine(result):
                result.close()
                raise TypeError(f"step {step_name!r} is `async def`: a query's ctx.call runs steps without "
                                "awaiting; call a plain step from queries")
            return result
        if kind == "query":
            _, name, payload, depth = request
            args, kwargs = messages.loads(payload)
            decl = query_decl(self._runtime, name)
            return run_query_body(self._runtime, self._transport, decl, args, kwargs, depth, self._task_id,
                                  self._resources)
        if kind == "resources":  # status(): a task that does not answer may be waiting for its resources
            return self._resources.describe()
        raise NotFound("read", str(kind), READS)

    def stored_progress(self) -> dict[tuple[str, int], int]:
        """{(topology, depot id): next offset to process} for this task's partitions."""
        progress = {}
        for key, value in self._store.iterate("meta", b"progress/", b"progress0"):
            # b"progress/<topology>/<depot id, 2 bytes>": the id may itself contain a b"/".
            topology, depot_id = key[len(b"progress/"):-3].decode(), int.from_bytes(key[-2:], "big")
            progress[(topology, depot_id)] = U64.unpack(value)[0]
        return progress


def _trimmed(message: str, offset: int) -> NotFound:
    """A NotFound with its own message (the records existed once)."""
    error = NotFound.__new__(NotFound)
    Exception.__init__(error, message)
    error.kind, error.name, error.known = "record", str(offset), []
    return error
