"""What a user declares: modules, depots, PStates, topologies, steps and queries.

Declarations are plain data checked eagerly where a mistake is local (a bad name, a
partition field the event type lacks) and again at deploy, where the whole module is known.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from headwater.engine.awaits import AWAIT_TIMEOUT_S_DEFAULT, AWAIT_TIMEOUT_S_MAX, MAX_AWAITING_DEFAULT, MAX_AWAITING_MAX
from headwater.errors import DefinitionError
from headwater.schema.types import Migrated, Migration

__all__ = ["Ack", "DepotDecl", "MicrobatchDecl", "MirrorDecl", "Module", "PStateDecl", "QueryDecl", "ResourceDecl",
           "Retention", "Retry", "StepDecl", "StreamDecl"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"{kind} name {name!r} is not valid: use letters, digits, '_', '.' and '-' only"
        )
    return name


class Ack(enum.Enum):
    """How long `append` waits: FULL = durable and processed, APPEND = durable, NONE = not at all.

    `FULL` (the default) returns once the event is on disk and every stream topology subscribed
    to the depot has finished its whole tree (hops and `ctx.append`s included), with each
    topology's result; `APPEND` once the event is on disk; `NONE` at once, returning None.
    Strings work too: `depot.append(event, ack="append")`.
    """

    FULL = "full"
    APPEND = "append"
    NONE = "none"

    @classmethod
    def parse(cls, ack: Ack | str) -> Ack:
        """`ack` itself, or the Ack named by a string in any case; ValueError names the choices."""
        if isinstance(ack, Ack):
            return ack
        found = _ACKS.get(ack.lower()) if isinstance(ack, str) else None
        if found is None:
            raise ValueError(f"ack={ack!r} is not valid; use full, append or none (hw.Ack.FULL, Ack.APPEND, Ack.NONE)")
        return found


_ACKS = {ack.value: ack for ack in Ack}  # appends parse acks often: a dict lookup, not a call of the Enum class

# The most a Retry may wait in all between attempts of one invocation of a plain handler or step
# (its task waits with it), and of an `async def` one (its task goes on meanwhile).
RETRY_BACKOFF_TOTAL_MAX_S = 5.0
RETRY_BACKOFF_TOTAL_MAX_ASYNC_S = 600.0


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a raising stream handler `times` more times, sleeping `backoff * 2**attempt` seconds between.

    Each sleep is capped at `backoff_max_s`. All of them together may wait at most 5 seconds for
    a plain handler, whose task waits with it, and 10 minutes for an `async def` one, whose task
    goes on with other records meanwhile; longer outages are for `DeadLetter.retry()`. (A plain
    step under an async handler's longer retry sleeps at most 5 seconds in all.) `Retry.NONE`
    (the default) sends a raising record straight to the dead letters.

        @module.stream(orders, retry=hw.Retry(times=3, backoff=0.1))   # waits 0.1, 0.2, 0.4 s
        def notify(ctx, order): ...

        @module.stream(orders, retry=hw.Retry(times=6, backoff=1.0, backoff_max_s=30))
        async def charge(ctx, order): ...                              # 1, 2, 4, 8, 16, 30 s
    """

    times: int = 0
    backoff: float = 0.0
    backoff_max_s: float = 5.0

    NONE: typing.ClassVar[Retry]

    def __post_init__(self) -> None:
        if not isinstance(self.times, int) or self.times < 0 or self.times > 100:
            raise DefinitionError(f"Retry(times={self.times!r}) must be an int between 0 and 100")
        if self.backoff < 0:
            raise DefinitionError(f"Retry(backoff={self.backoff!r}) must not be negative")
        if self.total_s > RETRY_BACKOFF_TOTAL_MAX_ASYNC_S:
            raise DefinitionError(
                f"Retry(times={self.times}, backoff={self.backoff}) waits {self.total_s:.1f}s in all between "
                f"attempts, more than {RETRY_BACKOFF_TOTAL_MAX_ASYNC_S:.0f}s; use fewer retries or a shorter "
                "backoff (backoff_max_s= caps each wait), and retry longer outages from the dead letters"
            )

    @property
    def total_s(self) -> float:
        """Seconds all the back-offs add up to, if every attempt fails."""
        return sum(self.delay_s(attempt) for attempt in range(self.times))

    def check_for(self, topology: str, fn: Callable[..., Any]) -> None:
        """A plain (not `async def`) handler waits out its back-off on its task: keep that short."""
        if self.total_s > RETRY_BACKOFF_TOTAL_MAX_S and not inspect.iscoroutinefunction(fn):
            raise DefinitionError(
                f"topology {topology!r}: Retry(times={self.times}, backoff={self.backoff}) waits {self.total_s:.1f}s "
                f"in all between attempts, more than {RETRY_BACKOFF_TOTAL_MAX_S}s, and a plain handler's task "
                "processes nothing else meanwhile; use fewer retries or a shorter backoff, make the handler "
                "`async def` (its task goes on while it backs off), or retry longer outages from the dead letters"
            )

    def delay_s(self, attempt: int) -> float:
        """Seconds to sleep before retry number `attempt + 1`."""
        return min(self.backoff * (2**attempt), self.backoff_max_s)


Retry.NONE = Retry()


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of a depot to keep, per partition: at most `max_records` records, none older than
    `max_age_s` seconds (either or both). A record a subscribed topology has not processed yet (or
    whose processing failed into the dead letters) is kept whatever its age or rank.

        m.depot("clicks", Click, retention=hw.Retention(max_records=1_000_000, max_age_s=7 * 86400))
    """

    max_records: int | None = None
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_records is None and self.max_age_s is None:
            raise DefinitionError("Retention() needs max_records, max_age_s or both; without one, drop retention=")
        if self.max_records is not None and (isinstance(self.max_records, bool) or not isinstance(
                self.max_records, int) or self.max_records < 0):
            raise DefinitionError(f"Retention(max_records={self.max_records!r}) must be an int of at least 0")
        if self.max_age_s is not None and (isinstance(self.max_age_s, bool) or not isinstance(
                self.max_age_s, (int, float)) or not self.max_age_s > 0):
            raise DefinitionError(f"Retention(max_age_s={self.max_age_s!r}) must be a positive number of seconds")


TICKS_KEPT = Retention(max_records=1000)  # a tick depot's records, once processed: time need not pile up
MIRROR_KEPT = Retention(max_records=0)  # a mirror's copy, once processed: the upstream depot is the log


@dataclass(eq=False)
class DepotDecl:
    module: Module
    name: str
    event_type: Any
    partition_by: str | Callable[[Any], Any] | None
    partitioned: bool
    client_appends: bool
    source: Any = None  # a headwater.Source for an external depot: it alone appends
    migration: Any = None  # a headwater.schema.Migration: stored events of the previous type convert through it
    retention: Retention | None = None  # trims the oldest records already processed

    def __repr__(self) -> str:
        return f"<depot {self.module.name}.{self.name}>"


@dataclass(eq=False)
class PStateDecl:
    module: Module
    name: str
    schema: Any
    partitioned: bool

    def __repr__(self) -> str:
        return f"<pstate {self.module.name}.{self.name}>"


@dataclass(eq=False)
class StreamDecl:
    module: Module
    name: str
    depots: tuple[DepotDecl, ...]
    fn: Callable[..., Any]
    start_from: Any
    retry: Retry
    max_awaiting: int = MAX_AWAITING_DEFAULT  # for an async handler or steps: invocations awaiting per task
    await_timeout_s: float = AWAIT_TIMEOUT_S_DEFAULT  # an invocation awaiting longer fails


@dataclass(eq=False)
class MicrobatchDecl:
    module: Module
    name: str
    depots: tuple[DepotDecl, ...]
    fn: Callable[..., Any]
    per_batch: bool
    start_from: Any


@dataclass(eq=False)
class StepDecl:
    module: Module
    name: str
    fn: Callable[..., Any]


@dataclass(eq=False)
class QueryDecl:
    module: Module
    name: str
    fn: Callable[..., Any]
    route_by: str | None


@dataclass(eq=False)
class ResourceDecl:
    module: Module
    name: str
    factory: Callable[[int], Any]
    close: Callable[[Any], Any] | None

    def __repr__(self) -> str:
        return f"<resource {self.module.name}.{self.name}>"


@dataclass(eq=False)
class MirrorDecl:
    """Another module's PState or query, used by name from this one (`mirror_pstate`, `mirror_query`)."""

    module: Module  # the module that mirrors
    kind: str  # "pstate" | "query"
    upstream: str  # the module that owns it
    name: str  # its name there

    def __repr__(self) -> str:
        return f"<mirrored {self.kind} {self.upstream}.{self.name} in {self.module.name}>"


@dataclass(eq=False)
class Module:
    """A unit of deployment: depots, PStates, topologies, steps and queries.

    Create it as `hw.Module(name)` (the other constructor arguments are the tables its methods
    fill), declare its parts with the methods below, then `cluster.deploy(module, tasks=n)`.
    Names are letters, digits, `_`, `.` and `-`, unique per kind within the module.

        bank = hw.Module("bank")
        deposits = bank.depot("deposits", Deposit, partition_by="user_id")
        funds = bank.pstate("funds", hw.Map(int, int))

        @bank.stream(deposits)
        def deposit(ctx: hw.Context, d: Deposit) -> int:
            ctx.pstate(funds)[d.user_id].increment(d.amount)
            return ctx.pstate(funds)[d.user_id].get()
    """

    name: str
    depots: dict[str, DepotDecl] = field(default_factory=dict)
    pstates: dict[str, PStateDecl] = field(default_factory=dict)
    streams: dict[str, StreamDecl] = field(default_factory=dict)
    microbatches: dict[str, MicrobatchDecl] = field(default_factory=dict)
    steps: dict[str, StepDecl] = field(default_factory=dict)
    queries: dict[str, QueryDecl] = field(default_factory=dict)
    resources: dict[str, ResourceDecl] = field(default_factory=dict)
    mirrors: dict[str, MirrorDecl] = field(default_factory=dict)  # by "kind:module.name"

    def __post_init__(self) -> None:
        check_name("module", self.name)

    def __repr__(self) -> str:
        return f"<module {self.name}>"

    def _claim(self, kind: str, name: str, table: dict[str, Any]) -> str:
        check_name(kind, name)
        if name in table:
            raise DefinitionError(f"module {self.name!r} already has a {kind} named {name!r}; pick another name")
        return name

    def depot(
        self,
        name: str,
        event_type: Any = Any,
        *,
        partition_by: str | Callable[[Any], Any] | None = None,
        partitioned: bool = True,
        client_appends: bool = True,
        retention: Retention | None = None,
    ) -> DepotDecl:
        """Declare a depot: a durable, partitioned, append-only log of events of `event_type`.

        `event_type` is a dataclass, `msgspec.Struct`, `TypedDict`, scalar type or `Any`; appends
        are validated against it. To change the type of a deployed depot, declare
        `hw.migrated(NewType, id=..., fn=old_event -> new_event)`: stored events convert as they are
        read, and are rewritten in the background. `partition_by` is None (round-robin), a field name or a callable
        `event -> key`; `partitioned=False` keeps one partition, on task 0. With
        `client_appends=False` only topologies append (`ctx.append`). Returns the declaration, to
        pass to `stream`, `microbatch` and `ctx.append`.
        """
        self._claim("depot", name, self.depots)
        migration = None
        if isinstance(event_type, Migrated):  # hw.migrated(NewType, id=..., fn=old_event -> new_event)
            migration, event_type = Migration(event_type.id, event_type.fn), event_type.schema
        if partition_by is not None and not partitioned:
            raise DefinitionError(f"depot {name!r}: partition_by has no meaning with partitioned=False; drop one")
        if isinstance(partition_by, str):
            _check_partition_field(name, event_type, partition_by)
        elif partition_by is not None and not callable(partition_by):
            raise DefinitionError(
                f"depot {name!r}: partition_by must be None, a field name or a callable event -> key, "
                f"not {partition_by!r}"
            )
        _check_retention(name, retention)
        decl = DepotDecl(self, name, event_type, partition_by, partitioned, client_appends, migration=migration,
                         retention=retention)
        self.depots[name] = decl
        return decl

    def external_depot(self, name: str, source: Any, event_type: Any = Any, *,
                       retention: Retention | None = None) -> DepotDecl:
        """Declare a depot fed by an external log: `source` is a `headwater.Source` (for example
        `hw.sources.RedisStream(...)` or `hw.sources.PostgresChanges(...)`).

        Source partition i becomes depot partition i, on task i, and the task's host polls it; each
        batch of events is appended with the source's position of the last one in the same write
        batch, so across crashes nothing is ingested twice or skipped. Clients cannot append to
        it; topologies subscribe to it like any depot. Events are converted into `event_type`
        (a dict's fields by name). `cluster.pause(module, name)` and `resume` stop and restart
        the ingestion, and `cluster.status()` shows each partition's position and lag.
        """
        from headwater.engine.sources import Source

        self._claim("depot", name, self.depots)
        if not isinstance(source, Source):
            raise DefinitionError(f"external depot {name!r}: source must be a headwater.Source (such as "
                                  f"hw.sources.RedisStream(...)), not {source!r}")
        partitions = source.partitions
        if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
            raise DefinitionError(f"external depot {name!r}: its source has partitions={partitions!r}; "
                                  "it must be an int of at least 1")
        _check_retention(name, retention)
        decl = DepotDecl(self, name, event_type, None, partitions > 1, False, source, retention=retention)
        self.depots[name] = decl
        return decl

    def tick_depot(self, name: str, *, every_s: float,
                   retention: Retention | None = TICKS_KEPT) -> DepotDecl:
        """Declare a depot that receives an `hw.Tick` (with its `.time`) every `every_s` seconds, on
        task 0: time-driven work is a topology subscribed to it. A stream topology gets every tick;
        a microbatch topology sees at most one tick per batch, the latest. Ticks missed while the
        module was down are not made up: the next comes at once, and then one per period. The
        depot keeps the latest 1,000 processed ticks unless `retention` says otherwise.

            minute = m.tick_depot("every_minute", every_s=60)

            @m.stream(minute)
            def expire(ctx: hw.Context, tick: hw.Tick) -> None: ...
        """
        from headwater.engine.ticks import TICK_PERIOD_MAX_S, TICK_PERIOD_MIN_S, Tick, TickSource

        if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or \
                not TICK_PERIOD_MIN_S <= every_s <= TICK_PERIOD_MAX_S:
            raise DefinitionError(f"tick depot {name!r}: every_s={every_s!r} must be a number of seconds from "
                                  f"{TICK_PERIOD_MIN_S} to {TICK_PERIOD_MAX_S:g}")
        return self.external_depot(name, TickSource(float(every_s)), Tick, retention=retention)

    def mirror_depot(self, module: str, depot: str, *, name: str | None = None,
                     retention: Retention | None = MIRROR_KEPT) -> DepotDecl:
        """Subscribe this module's topologies to depot `depot` of module `module`, deployed on the
        same cluster: the returned declaration goes to `stream` and `microbatch` like a local depot's.

        The mirror has its own progress: each record is copied exactly once, in order per
        partition, into a depot of this module named `"module.depot"` (or `name`), which its
        topologies process like any other; clients cannot append to it. The copy is no second
        log: it keeps a record only until this module's topologies have processed it, unless
        `retention` says otherwise (`None` keeps every record). The upstream module keeps every
        record until the mirror has copied it, whatever its own retention. Its event type is the
        upstream depot's, found at deploy. On the first deploy the copy starts at the upstream
        depot's end, unless a subscribed topology has `start_from="beginning"` (or a date), when it
        starts at the upstream's first retained record.

            signups = m.mirror_depot("registration", "registrations")

            @m.stream(signups)
            def welcome(ctx: hw.Context, r: Registration) -> None: ...
        """
        from headwater.engine.mirrors import MirrorSource

        check_name("module", module)
        check_name("depot", depot)
        local = self._claim("depot", name or f"{module}.{depot}", self.depots)
        if module == self.name:
            raise DefinitionError(f"module {self.name!r} mirrors its own depot {depot!r}; subscribe to "
                                  "the depot itself")
        _check_retention(local, retention)
        decl = DepotDecl(self, local, Any, None, True, False, MirrorSource(module, depot, f"{self.name}/{local}"),
                         retention=retention)
        self.depots[local] = decl
        return decl

    def mirror_pstate(self, module: str, pstate: str) -> MirrorDecl:
        """PState `pstate` of module `module`, read-only from this module's handlers and queries:
        `ctx.pstate(users)[k].get()`. Each read goes to the upstream task owning the key, at the
        time it is made: it is not part of the reading invocation's atomic batch, and a replay may
        read a newer value.

            users = m.mirror_pstate("registration", "users")
        """
        return self._mirror("pstate", module, pstate)

    def mirror_query(self, module: str, query: str) -> MirrorDecl:
        """Query `query` of module `module`, callable from this module's queries with its
        arguments: `ctx.query(signups_on)(day)`.

            signups_on = m.mirror_query("registration", "signups_on")
        """
        return self._mirror("query", module, query)

    def _mirror(self, kind: str, module: str, name: str) -> MirrorDecl:
        check_name("module", module)
        check_name(kind, name)
        if module == self.name:
            raise DefinitionError(f"module {self.name!r} mirrors its own {kind} {name!r}; use it directly")
        key = f"{kind}:{module}.{name}"
        decl = self.mirrors.get(key)
        if decl is None:
            decl = self.mirrors[key] = MirrorDecl(self, kind, module, name)
        return decl

    def dependencies(self) -> dict[str, list[tuple[str, str]]]:
        """The other modules this one mirrors: {module: [(kind, name), ...]}, sorted."""
        from headwater.engine.mirrors import MirrorSource

        found: dict[str, set[tuple[str, str]]] = {}
        for decl in self.depots.values():
            if isinstance(decl.source, MirrorSource):
                found.setdefault(decl.source.upstream, set()).add(("depot", decl.source.depot))
        for mirror in self.mirrors.values():
            found.setdefault(mirror.upstream, set()).add((mirror.kind, mirror.name))
        return {module: sorted(names) for module, names in sorted(found.items())}

    def pstate(self, name: str, schema: Any, *, partitioned: bool = True) -> PStateDecl:
        """Declare a PState with `schema` (`hw.Map`, `hw.List`, `hw.Set`, `hw.Record` or a leaf type).

        A top-level `hw.Map` is partitioned by its key; any other top-level schema holds one value
        per task. `partitioned=False` keeps the whole PState on task 0. Returns the declaration,
        to pass to `ctx.pstate`.
        """
        self._claim("PState", name, self.pstates)  # the schema itself is checked by its layout at deploy
        decl = PStateDecl(self, name, schema, partitioned)
        self.pstates[name] = decl
        return decl

    def stream(
        self,
        *depots: DepotDecl | str,
        name: str | None = None,
        start_from: Any = "end",
        retry: Retry = Retry.NONE,
        max_awaiting: int = MAX_AWAITING_DEFAULT,
        await_timeout_s: float = AWAIT_TIMEOUT_S_DEFAULT,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register `fn(ctx, event)` as a stream topology of `depots`: called once per record, in order per partition.

        `name` defaults to the function's name. `start_from` says where the topology begins on
        first deploy: `"end"`, `"beginning"`, a `datetime`, or `{partition: offset}`. `retry`
        retries a raising handler on its task before the record becomes a dead letter. What the
        handler returns (or sets with `ctx.ack_return`) is the full-ack appender's result.

        The handler and its steps may be `async def`: while one awaits, its task goes on with other
        records and hops. At most `max_awaiting` of the topology's invocations await at once per
        task; one still running after `await_timeout_s` fails with `TimeoutError` (then `retry`).
        """
        if not depots or (callable(depots[0]) and not isinstance(depots[0], (DepotDecl, str))):
            raise DefinitionError("@module.stream needs the depots it subscribes to: @module.stream(my_depot)")
        _check_start_from(start_from)
        if not isinstance(retry, Retry):
            raise DefinitionError(f"retry must be a headwater.Retry, not {retry!r}")
        _check_awaits(max_awaiting, await_timeout_s)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            retry.check_for(name or fn.__name__, fn)
            topology = self._claim("topology", name or fn.__name__, self.topologies)
            resolved = tuple(self._resolve_depot(d, topology) for d in depots)
            self.streams[topology] = StreamDecl(self, topology, resolved, fn, start_from, retry, max_awaiting,
                                                float(await_timeout_s))
            return fn

        return register

    def microbatch(
        self,
        *depots: DepotDecl | str,
        name: str | None = None,
        per_batch: bool = False,
        start_from: Any = "end",
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register an exactly-once topology that processes depot records in atomic batches.

        The handler is called per record as `fn(ctx, event)`, or with `per_batch=True` once per
        partition per batch as `fn(ctx, events)`. A batch's writes on every task become visible
        together; a failure or crash reruns the whole batch. Appenders do not wait for it (in
        tests: `cluster.wait_for_microbatch`).
        """
        if not depots or (callable(depots[0]) and not isinstance(depots[0], (DepotDecl, str))):
            raise DefinitionError("@module.microbatch needs the depots it subscribes to: @module.microbatch(my_depot)")
        _check_start_from(start_from)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.iscoroutinefunction(fn):
                raise DefinitionError(
                    f"microbatch topology {name or fn.__name__!r}: the handler is `async def`, but microbatch "
                    "handlers run synchronously inside their batch; make it a plain def, or use an async "
                    "@module.stream topology for work that awaits")
            topology = self._claim("topology", name or fn.__name__, self.topologies)
            resolved = tuple(self._resolve_depot(d, topology) for d in depots)
            self.microbatches[topology] = MicrobatchDecl(self, topology, resolved, fn, bool(per_batch), start_from)
            return fn

        return register

    @property
    def topologies(self) -> dict[str, StreamDecl | MicrobatchDecl]:
        """Every topology of the module, stream and microbatch, by name."""
        return {**self.streams, **self.microbatches}

    def step(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register `fn(ctx, *args)` as a step: what `ctx.hop`, `ctx.call` and `ctx.call_all` run on a task.

        A step reached by a hop writes like its topology; one called from a query only reads.
        """
        name = self._claim("step", fn.__name__, self.steps)
        self.steps[name] = StepDecl(self, name, fn)
        return fn

    def query(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
              route_by: str | None = None) -> Any:
        """Register `fn(ctx: hw.QueryContext, *args)` as a read-only query clients invoke by name.

        Use bare (`@module.query`) or with options. `route_by` names an argument whose key picks
        the task the body runs on. Arguments are checked against the function's type hints.
        """
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            query_name = self._claim("query", name or fn.__name__, self.queries)
            if route_by is not None and route_by not in _parameters(fn)[1:]:
                raise DefinitionError(f"query {query_name!r}: route_by={route_by!r} is not one of its arguments")
            self.queries[query_name] = QueryDecl(self, query_name, fn, route_by)
            return fn

        return register(fn) if fn is not None else register

    def resource(self, name: str, factory: Callable[[int], Any], *, close: Callable[[Any], Any] | None = None
                 ) -> ResourceDecl:
        """Declare a per-task resource: `factory(task_id)` builds one object per task (a client, a pool)
        in the process hosting the task, when the task starts; `close(obj)` runs when it stops.

        Handlers, steps and routed queries get it with `ctx.resource(name)`. The object is never
        pickled: the factory travels with the module, and each process builds its own.

            smtp = m.resource("smtp", lambda task_id: smtplib.SMTP("localhost", 25), close=lambda s: s.quit())
        """
        self._claim("resource", name, self.resources)
        _check_resource(name, factory, close)
        decl = ResourceDecl(self, name, factory, close)
        self.resources[name] = decl
        return decl

    def _resolve_depot(self, depot: DepotDecl | str, topology: str) -> DepotDecl:
        if isinstance(depot, DepotDecl):
            if depot.module is not self:
                raise DefinitionError(
                    f"topology {topology!r} subscribes to {depot!r} of another module; a module reads its own depots"
                )
            return depot
        if depot not in self.depots:
            from headwater.errors import NotFound

            raise DefinitionError(str(NotFound("depot", str(depot), self.depots, where=f"module {self.name!r}")))
        return self.depots[depot]


def _parameters(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def event_fields(event_type: Any) -> Sequence[str] | None:
    """Field names of a structured event type, or None when it has no fixed fields."""
    if dataclasses.is_dataclass(event_type):
        return [f.name for f in dataclasses.fields(event_type)]
    if isinstance(event_type, type) and issubclass(event_type, msgspec.Struct):
        return list(event_type.__struct_fields__)
    if typing.is_typeddict(event_type):
        return list(typing.get_type_hints(event_type))
    return None


def _check_partition_field(depot: str, event_type: Any, field_name: str) -> None:
    fields = event_fields(event_type)
    if fields is None:
        if event_type is Any:
            return  # Any events are checked per append: a dict with the field.
        raise DefinitionError(
            f"depot {depot!r}: partition_by={field_name!r} needs an event type with fields "
            f"(dataclass, msgspec.Struct, TypedDict), not {event_type!r}; use a callable instead"
        )
    if field_name not in fields:
        from headwater.errors import NotFound

        missing = NotFound("field", field_name, fields, where=getattr(event_type, "__name__", str(event_type)))
        raise DefinitionError(f"depot {depot!r}: partition_by: {missing}")


def _check_resource(name: str, factory: Any, close: Any) -> None:
    """Refuse, at declaration, a factory that cannot be called as `factory(task_id)` or a close that is no callable."""
    if not callable(factory):
        raise DefinitionError(f"resource {name!r}: factory must be a callable factory(task_id) -> object, "
                              f"not {factory!r}")
    if close is not None and not callable(close):
        raise DefinitionError(f"resource {name!r}: close must be None or a callable close(obj), not {close!r}")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # a builtin without a signature: it is called as it is
    try:
        signature.bind(0)
    except TypeError:
        raise DefinitionError(
            f"resource {name!r}: its factory is called with the task id, as factory(task_id), but takes "
            f"{signature}; add a task_id parameter (it may ignore it)"
        ) from None


def _check_retention(depot: str, retention: Any) -> None:
    if retention is not None and not isinstance(retention, Retention):
        raise DefinitionError(f"depot {depot!r}: retention must be a headwater.Retention, not {retention!r}")


def _check_start_from(start_from: Any) -> None:
    if start_from in ("end", "beginning") or isinstance(start_from, datetime):
        return
    if isinstance(start_from, dict) and all(isinstance(k, int) and isinstance(v, int) for k, v in start_from.items()):
        return
    raise DefinitionError(
        f"start_from={start_from!r} is not valid: use 'end', 'beginning', a datetime, "
        "or {partition: offset}"
    )


def _check_awaits(max_awaiting: Any, await_timeout_s: Any) -> None:
    if type(max_awaiting) is not int or not 1 <= max_awaiting <= MAX_AWAITING_MAX:
        raise DefinitionError(f"max_awaiting must be an int from 1 to {MAX_AWAITING_MAX}, not {max_awaiting!r}")
    if (not isinstance(await_timeout_s, (int, float)) or isinstance(await_timeout_s, bool)
            or not 0 < await_timeout_s <= AWAIT_TIMEOUT_S_MAX):
        raise DefinitionError(f"await_timeout_s must be a number of seconds in (0, {AWAIT_TIMEOUT_S_MAX:g}], "
                              f"not {await_timeout_s!r}")
