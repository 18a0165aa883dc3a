"""Queries: read-only functions over every task's committed state, invoked by clients.

A query body runs against a `QueryContext`: PState views route each read to the task owning
its key, `call`/`call_task`/`call_all` run a step on tasks, and `ctx.query(name)` invokes
another query of the module. Everything crosses tasks through the transport, so the same
code serves one process and many.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from headwater.engine import messages
from headwater.engine.definitions import MirrorDecl, QueryDecl
from headwater.engine.runtime import ModuleRuntime, PStateRuntime
from headwater.engine.transport import Transport
from headwater.errors import (
    DefinitionError,
    HandlerError,
    HeadwaterError,
    NotFound,
    PathError,
    QueryDepthExceeded,
    ReadOnlyError,
    ResourceError,
    SchemaError,
    Unavailable,
)
from headwater.pstate import View
from headwater.schema import task_for_key

__all__ = ["MIRROR_READ_WAIT_S", "QUERY_DEPTH_MAX", "BoundModule", "ModuleSource", "QueryContext",
           "RoutedPStateExecutor", "bind_query_arguments", "invoke_query", "mirrored", "routed_view"]

# Queries may invoke queries; past this nesting something is recursing without end.
QUERY_DEPTH_MAX = 32
# A read of another module's PState (or a call of its query) through a mirror is tried again while
# that module is unavailable (restarting), every MIRROR_READ_RETRY_S, for at most MIRROR_READ_WAIT_S.
MIRROR_READ_WAIT_S = 30.0
MIRROR_READ_RETRY_S = 0.05


class _Absent:
    """What a routed `get` finds where nothing is stored: one object in every process (pickled by name)."""

    def __reduce__(self) -> str:
        return "ABSENT"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


class ModuleSource(Protocol):
    """Where a module's current runtime and transport are found (a deployment, or a fixed pair)."""

    @property
    def runtime(self) -> ModuleRuntime: ...

    @property
    def transport(self) -> Transport: ...


@dataclass(frozen=True, slots=True)
class BoundModule:
    runtime: ModuleRuntime
    transport: Transport


class RoutedPStateExecutor:
    """Runs a PState view's reads on the task that owns them, on committed state; never writes.

    The module is looked up on every read, so a view stays valid across `cluster.update`.
    """

    __slots__ = ("_source", "_name", "_task")

    def __init__(self, source: ModuleSource, name: str, task: int | None) -> None:
        self._source = source
        self._name = name
        self._task = task

    def _route(self, runtime: ModuleRuntime, pstate: PStateRuntime, steps: tuple[Any, ...]) -> int:
        tasks = runtime.tasks
        if not pstate.decl.partitioned or tasks == 1:
            return 0
        if pstate.keyed and steps and self._task is None:
            return task_for_key(steps[0], tasks)
        if self._task is not None:
            return self._task
        what = "a read of the whole map" if pstate.keyed else "a per-task PState"
        raise PathError(
            f"PState {runtime.name}.{self._name} is spread over {tasks} tasks and "
            f"{what} has no key to route by: pass task=i to cluster.pstate(...), or read it in a query"
        )

    def read(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (),
             kwargs: dict[str, Any] | None = None) -> Any:
        source = self._source
        runtime = source.runtime
        task = self._route(runtime, runtime.pstate(self._name), steps)
        if op == "get":  # the caller's default stays here: it may be a marker that only this process knows
            found = source.transport.read(task, ("pstate", self._name, steps, op, (ABSENT,), kwargs or {}))
            return (args[0] if args else None) if found is ABSENT else found
        return source.transport.read(task, ("pstate", self._name, steps, op, args, kwargs or {}))

    def watch(self, steps: tuple[Any, ...], callback: Any, on_commit: Any = None) -> Any:
        source = self._source
        runtime = source.runtime
        task = self._route(runtime, runtime.pstate(self._name), steps)
        watch = getattr(source, "watch", None)
        if watch is None:
            raise ReadOnlyError(f"PState {runtime.name}.{self._name} cannot be watched from a query: watch it "
                                "from a client (cluster.pstate(...).watch())")
        return watch(task, self._name, steps, callback, f"{runtime.name}.{self._name}{_label(steps)}",
                     on_commit=on_commit)

    def write(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> None:
        raise ReadOnlyError(
            f"cannot {op} PState {self._source.runtime.name}.{self._name} here: clients and queries only read; "
            "PStates change through topologies, so append an event to a depot instead"
        )


class _PatientExecutor:
    """A mirrored PState's reads: while the other module is unavailable (its worker restarts, it is
    updated), each read is tried again, for at most MIRROR_READ_WAIT_S, so that a handler reading
    it waits for it rather than fail its record."""

    __slots__ = ("_inner",)

    def __init__(self, inner: RoutedPStateExecutor) -> None:
        self._inner = inner

    def read(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (),
             kwargs: dict[str, Any] | None = None) -> Any:
        return _patiently(lambda: self._inner.read(steps, op, args, kwargs))

    def watch(self, steps: tuple[Any, ...], callback: Any, on_commit: Any = None) -> Any:
        raise ReadOnlyError("a mirrored PState cannot be watched from a module: watch it from a client "
                            "(cluster.pstate(module, pstate).watch())")

    def write(self, steps: tuple[Any, ...], op: str, args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> None:
        self._inner.write(steps, op, args, kwargs)


def _patiently(call: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + MIRROR_READ_WAIT_S
    while True:
        try:
            return call()
        except Unavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(MIRROR_READ_RETRY_S)


def mirrored(runtime: ModuleRuntime, transport: Any, decl: MirrorDecl, kind: str) -> Any:
    """What `ctx.pstate(mirror)` (kind "pstate": a read-only routed view) or `ctx.query(mirror)`
    (kind "query": the query as a function) gives: the other module, through the clients of this
    process (`Transport.peers`)."""
    if decl.kind != kind:
        use = "ctx.pstate(...)" if decl.kind == "pstate" else "ctx.query(...)"
        raise DefinitionError(f"{decl!r} is a mirrored {decl.kind}: use it with {use}")
    if decl.module.name != runtime.name:
        raise DefinitionError(f"{decl!r} was declared by module {decl.module.name!r}, not {runtime.name!r}; "
                              f"declare it in {runtime.name!r} with mirror_{kind}({decl.upstream!r}, {decl.name!r})")
    peers = transport.peers
    if peers is None:
        raise Unavailable(f"{decl!r}: this process has no clients of the cluster's other modules")
    if kind == "query":
        query = peers.query(decl.upstream, decl.name)
        return lambda *args, **kwargs: _patiently(lambda: query(*args, **kwargs))
    deployment = peers.deployment(decl.upstream)
    pstate = deployment.runtime.pstate(decl.name)
    return View(_PatientExecutor(RoutedPStateExecutor(deployment, decl.name, None)), pstate.decl.schema,
                name=f"{decl.upstream}.{decl.name}")


def _label(steps: tuple[Any, ...]) -> str:
    return "".join(f"[{step!r}]" for step in steps)


def routed_view(source: ModuleSource, name: Any, task: int | None = None) -> Any:
    runtime = source.runtime
    pstate = runtime.pstate(name)
    if task is not None and (not isinstance(task, int) or not 0 <= task < runtime.tasks):
        raise ValueError(f"task={task!r} does not exist; module {runtime.name} has tasks 0..{runtime.tasks - 1}")
    executor = RoutedPStateExecutor(source, pstate.name, task)
    return View(executor, pstate.decl.schema, name=f"{runtime.name}.{pstate.name}")


class QueryContext:
    """What a query body sees: read-only PStates of every task, steps to call on tasks, other queries.

    Attributes:
        num_tasks: The module's task count.
        task_id: The task the body runs on when the query has `route_by`; None otherwise.
    """

    def __init__(self, runtime: ModuleRuntime, transport: Transport, *, depth: int = 0,
                 task_id: int | None = None, resources: Any = None) -> None:
        self._runtime = runtime
        self._transport = transport
        self._resources = resources  # the TaskResources of the task a routed query runs on
        self._depth = depth
        self.num_tasks = runtime.tasks
        self.task_id = task_id  # the task the body runs on, when the query is routed (route_by)

    def pstate(self, decl_or_name: Any, *, task: int | None = None) -> Any:
        """A read-only `View` of a PState of this module (its declaration or name), on any task.

        Each read goes to the task owning the path's first key, like a client read. `task=i`
        reads task `i`'s part instead (a per-task PState, or the keys of a map held there): on
        a module of several tasks, a read with no key to route by needs it, else `PathError`.
        A task that does not exist raises `ValueError`; writes raise `ReadOnlyError`.

            ctx.pstate(funds)[user_id].get(0)
            sum(len(ctx.pstate(funds, task=i).keys()) for i in range(ctx.num_tasks))
        """
        if isinstance(decl_or_name, MirrorDecl):  # another module's (`module.mirror_pstate`)
            if task is not None:
                raise ValueError(f"{decl_or_name!r}: task= reads a part of this module's PStates; a mirrored "
                                 "PState routes each read to its own module's task")
            return mirrored(self._runtime, self._transport, decl_or_name, "pstate")
        return routed_view(BoundModule(self._runtime, self._transport), decl_or_name, task)

    def resource(self, name: str) -> Any:
        """The object of resource `name` (`module.resource`) of the task this query runs on.

        Only a query with `route_by` runs on a task; any other raises `ResourceError` (call a
        step that uses the resource instead: `ctx.call(key, step)` runs it on a task). The
        object may be used by queries and handlers at once, from several threads.

            @m.query(route_by="user_id")
            def profile(ctx: hw.QueryContext, user_id: int) -> dict:
                return ctx.resource("profiles_api").get(user_id)
        """
        if self._resources is None:
            if name not in self._runtime.resources:
                raise NotFound("resource", str(name), self._runtime.resources,
                               where=f"module {self._runtime.name!r} (declare it with module.resource(name, factory))")
            raise ResourceError(
                f"resource {name!r}: this query of module {self._runtime.name!r} runs on no task (it has no "
                "route_by), and resources live on tasks; give it route_by=..., or call a step that uses the "
                "resource with ctx.call(key, step) or ctx.call_task(i, step)", resource=name)
        return self._resources.get(name)

    def call_task(self, task_id: int, step: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run `step` (a `@module.step` function, or its name) on task `task_id`; its return value.

        The step reads that task's committed PStates with `ctx.pstate(p)`, and any write in it
        raises `ReadOnlyError`. Arguments cross to the task serialized (msgpack): one that
        cannot be raises `SchemaError`. A task that is not 0 to `num_tasks` - 1 raises
        `ValueError`, an unknown step `NotFound`; an exception in the step ends the query.

            ctx.call_task(0, local_total)
        """
        runtime = self._runtime
        if not isinstance(task_id, int) or not 0 <= task_id < runtime.tasks:
            raise ValueError(f"task {task_id!r} does not exist; tasks are 0..{runtime.tasks - 1}")
        name = runtime.step(step).name
        return self._transport.read(task_id, ("step", name, _pack(name, args, kwargs)))

    def call(self, key: Any, step: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run `step` on the task that owns `key` in the module's partitioned PStates; like
        `call_task` otherwise.

            ctx.call(user_id, balance_of, user_id)
        """
        return self.call_task(task_for_key(key, self.num_tasks), step, *args, **kwargs)

    def call_all(self, step: Any, /, *args: Any, **kwargs: Any) -> list[Any]:
        """Run `step` on every task; the return values in task order. Like `call_task` otherwise.

            sum(ctx.call_all(local_total))          # each task sums its own part
        """
        name = self._runtime.step(step).name
        payload = _pack(name, args, kwargs)
        return self._transport.read_many([(task_id, ("step", name, payload)) for task_id in range(self.num_tasks)])

    def query(self, name: Any) -> Any:
        """Another query of this module (its function or name), callable with its arguments.

        It runs in this query's consistent cut, with its arguments checked like a client's, and
        on the task of its `route_by` argument if it has one. An unknown name raises `NotFound`;
        queries nested more than 32 deep raise `QueryDepthExceeded`.

            ctx.query(total_funds)()
            ctx.query("balance_report")(user_id=2)

        A mirrored query (`module.mirror_query`) runs in its own module, as a client's call would.
        """
        if isinstance(name, MirrorDecl):
            return mirrored(self._runtime, self._transport, name, "query")
        decl = query_decl(self._runtime, _query_name(self._runtime, name))

        def invoke(*args: Any, **kwargs: Any) -> Any:
            return invoke_query(self._runtime, self._transport, decl, args, kwargs, depth=self._depth + 1)

        return invoke


def _pack(step: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    try:
        return messages.dumps((args, kwargs))
    except Exception as e:
        raise SchemaError(f"arguments of step {step!r} cannot be serialized: {e}") from None


def _query_name(runtime: ModuleRuntime, query: Any) -> Any:
    """The registered name of a query given by name or by its function (which `name=` may have renamed)."""
    if isinstance(query, str):
        return query
    found = next((decl.name for decl in runtime.queries.values() if decl.fn is query), None)
    return found if found is not None else getattr(query, "__name__", query)


def query_decl(runtime: ModuleRuntime, name: Any) -> QueryDecl:
    decl = runtime.queries.get(name) if isinstance(name, str) else None
    if decl is None:
        raise NotFound("query", str(name), runtime.queries, where=f"module {runtime.name!r}")
    return decl


def bind_query_arguments(decl: QueryDecl, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    """Bind arguments to the query's signature and check them against its type hints."""
    signature = inspect.signature(decl.fn)
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as e:
        raise SchemaError(f"query {decl.module.name}.{decl.name}({_shown(signature, decl.fn)}): {e}") from None
    hints = _hints(decl.fn)
    for name, value in list(bound.arguments.items())[1:]:
        hint = hints.get(name)
        if hint is None or hint is Any:
            continue
        try:
            bound.arguments[name] = msgspec.convert(value, hint, strict=True, from_attributes=True)
        except msgspec.ValidationError as e:
            raise SchemaError(f"argument {name!r} of query {decl.module.name}.{decl.name}: {e}", path=name) from None
        except TypeError:
            continue  # a hint msgspec cannot check (e.g. a Protocol): take the value as given
    return bound


def _shown(signature: inspect.Signature, fn: Any) -> str:
    """The query's parameters after ctx, as a reader would write them: `user: int, hops: int`."""
    hints = _hints(fn)
    parts = []
    for name in list(signature.parameters)[1:]:
        hint = hints.get(name)
        shown = getattr(hint, "__name__", None) if isinstance(hint, type) else (str(hint) if hint else None)
        parts.append(f"{name}: {shown}" if shown else name)
    return ", ".join(parts)


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: skip validation rather than fail the query
        return {}


def invoke_query(runtime: ModuleRuntime, transport: Transport, decl: QueryDecl, args: tuple[Any, ...],
                 kwargs: dict[str, Any], *, depth: int = 0) -> Any:
    """Run a query: on the task owning its `route_by` argument, or here for unrouted queries."""
    if depth > QUERY_DEPTH_MAX:
        raise QueryDepthExceeded(
            f"query {decl.module.name}.{decl.name} is nested {depth} queries deep (limit {QUERY_DEPTH_MAX}); "
            "a query keeps invoking queries without end"
        )
    bound = bind_query_arguments(decl, args, kwargs)
    if decl.route_by is None:
        return run_query_body(runtime, transport, decl, bound.args[1:], bound.kwargs, depth, None)
    home = task_for_key(bound.arguments[decl.route_by], runtime.tasks)
    payload = messages.dumps((bound.args[1:], bound.kwargs))
    return transport.read(home, ("query", decl.name, payload, depth))


def run_query_body(runtime: ModuleRuntime, transport: Transport, decl: QueryDecl, args: tuple[Any, ...],
                   kwargs: dict[str, Any], depth: int, task_id: int | None, resources: Any = None) -> Any:
    ctx = QueryContext(runtime, transport, depth=depth, task_id=task_id, resources=resources)
    # One consistent cut: no microbatch lands halfway through. A query called by a query reads
    # inside its caller's cut (which may be held by another process): it takes no hold of its own.
    cut = transport.consistent_reads() if depth == 0 else contextlib.nullcontext()
    try:
        with cut:
            return decl.fn(ctx, *args, **kwargs)
    except HeadwaterError:
        raise
    except Exception as e:
        raise HandlerError(
            f"query {decl.module.name}.{decl.name} raised {type(e).__name__}: {e}",
            remote_traceback=traceback.format_exc(), error_type=type(e).__name__,
        ) from None
