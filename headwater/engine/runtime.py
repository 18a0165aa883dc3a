"""A module compiled for one deployment: ids, codecs, layouts and subscriptions, fixed at deploy."""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any

from headwater.engine.definitions import DepotDecl, MicrobatchDecl, Module, PStateDecl, StreamDecl
from headwater.engine.events import EventCodec
from headwater.engine.writes import WriterGuard, check_writer_kinds
from headwater.errors import DefinitionError, NotFound
from headwater.schema import task_for_key

__all__ = ["Catalog", "DepotRuntime", "ModuleRuntime", "PStateRuntime"]


@dataclass
class Catalog:
    """Durable facts about a deployed module: task count, ids, version, and the shapes of its data.

    Ids never change once assigned, and are never given again after their name is deleted, so
    storage keys written by an earlier version of the module stay valid (and a deleted name's
    leftovers can never be read as a new one's). `shapes` records what the stored data looks like
    (event types, PState schemas, topologies), so an update can be checked against it;
    `dropped` lists every deleted name with the version that deleted it, which each task applies
    to its store once (`Task.recover`).
    """

    module: str
    tasks: int
    depot_ids: dict[str, int] = field(default_factory=dict)
    pstate_ids: dict[str, int] = field(default_factory=dict)
    replication: int = 1  # copies of each task's store, on as many workers
    version: int = 1  # 1 at first deploy, one more at each update
    shapes: dict[str, dict[str, Any]] | None = None  # {"depots"|"pstates"|"topologies": {name: shape}}
    dropped: list[dict[str, Any]] = field(default_factory=list)  # [{"version", "kind", "name", "id"}]
    # PStates whose stored data is migrating: {name: {"ids", "from_id", "from_shape", "version"}}
    migrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per depot whose event type was migrated, its event version (stored events carry theirs), and
    # the depots whose stored events are being rewritten: {name: {"ids", "from_version", "version"}}
    event_versions: dict[str, int] = field(default_factory=dict)
    depot_migrations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def assign(self, module: Module) -> None:
        for kind, table, names in (("depot", self.depot_ids, module.depots), ("pstate", self.pstate_ids,
                                                                               module.pstates)):
            for name in names:
                if name not in table:
                    table[name] = self.next_id(kind)

    def next_id(self, kind: str) -> int:
        """An id never given to a name of `kind` before (deleted and migrating-from ids included)."""
        table = self.depot_ids if kind == "depot" else self.pstate_ids
        retired = [d["id"] for d in self.dropped if d["kind"] == kind and d["id"] is not None]
        if kind == "pstate":
            retired += [m["from_id"] for m in self.migrations.values()]
        return max([*table.values(), *retired], default=0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "tasks": self.tasks, "depot_ids": self.depot_ids,
                "pstate_ids": self.pstate_ids, "replication": self.replication, "version": self.version,
                "shapes": self.shapes, "dropped": self.dropped, "migrations": self.migrations,
                "event_versions": self.event_versions, "depot_migrations": self.depot_migrations}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        # Catalogs written before versions and shapes were kept read as version 1 with unknown shapes.
        return cls(data["module"], data["tasks"], data["depot_ids"], data["pstate_ids"], data.get("replication", 1),
                   data.get("version", 1), data.get("shapes"), data.get("dropped", []), data.get("migrations", {}),
                   data.get("event_versions", {}), data.get("depot_migrations", {}))


@dataclass(eq=False)
class DepotRuntime:
    decl: DepotDecl
    depot_id: int
    codec: EventCodec
    partitions: int
    subscribers: list[StreamDecl]
    microbatches: list[MicrobatchDecl] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.decl.name

    round_robin: Any = field(default_factory=lambda: itertools.count())

    def task_of_partition(self, partition: int) -> int:
        return partition  # partition i of every depot lives on task i

    def partition_for(self, event: Any, idempotency_key: str | None = None) -> int:
        """The partition an (already validated) event goes to."""
        if self.partitions == 1:
            return 0
        if self.decl.partition_by is not None:
            return task_for_key(self.codec.partition_key(event), self.partitions)
        if idempotency_key is not None:  # a repeat must reach the partition that saw the first append
            return task_for_key(idempotency_key, self.partitions)
        return next(self.round_robin) % self.partitions


@dataclass(eq=False)
class PStateRuntime:
    decl: PStateDecl
    pstate_id: int
    layout: Any  # headwater.pstate.PStateLayout
    keyed: bool  # a partitioned top-level map: step 0 is the key that picks the task

    @property
    def name(self) -> str:
        return self.decl.name


class ModuleRuntime:
    def __init__(self, module: Module, catalog: Catalog, *, writer_kinds: dict[str, str] | None = None) -> None:
        from headwater.pstate import PStateLayout
        from headwater.pstate.migrating import MigratingLayout
        from headwater.schema import Map
        from headwater.schema.shapes import schema_from_shape

        self.module = module
        self.name = module.name
        self.tasks = catalog.tasks
        self.catalog = catalog
        self.depots: dict[str, DepotRuntime] = {}
        self.depots_by_id: dict[int, DepotRuntime] = {}
        for name, decl in module.depots.items():
            partitions = self.tasks if decl.partitioned else 1
            if decl.source is not None:
                partitions = _source_partitions(decl, self.tasks)
            subscribers = [s for s in module.streams.values() if decl in s.depots]
            batched = [b for b in module.microbatches.values() if decl in b.depots]
            migrating = catalog.depot_migrations.get(name)
            previous = None if migrating is None or decl.migration is None else (migrating["from_version"],
                                                                                 decl.migration.fn)
            codec = EventCodec(decl, catalog.event_versions.get(name, 0), previous)
            depot = DepotRuntime(decl, catalog.depot_ids[name], codec, partitions, subscribers, batched)
            self.depots[name] = depot
            self.depots_by_id[depot.depot_id] = depot
        self.pstates: dict[str, PStateRuntime] = {}
        for name, pstate_decl in module.pstates.items():
            keyed = isinstance(pstate_decl.schema, Map) and pstate_decl.partitioned
            migration = catalog.migrations.get(name)
            try:
                if migration is None:
                    layout = PStateLayout(pstate_decl.schema, catalog.pstate_ids[name], top_level_map_partitioned=keyed)
                else:  # its stored data is still moving to the new schema: reads convert what has not
                    layout = MigratingLayout(pstate_decl.schema, catalog.pstate_ids[name],
                                             top_level_map_partitioned=keyed,
                                             old_schema=schema_from_shape(migration["from_shape"]),
                                             old_id=migration["from_id"])
            except DefinitionError as e:
                raise DefinitionError(f"PState {module.name}.{name}: {e}") from None
            self.pstates[name] = PStateRuntime(pstate_decl, catalog.pstate_ids[name], layout, keyed)
        self.streams = dict(module.streams)
        self.microbatches = dict(module.microbatches)
        # A process that cannot read the handlers' source (a worker given them by value) is given
        # what the deploying process found in it.
        self.writers = WriterGuard(module.name, check_writer_kinds(module) if writer_kinds is None else writer_kinds)
        self.steps = dict(module.steps)
        self.queries = dict(module.queries)
        self.resources = dict(module.resources)
        _check_handlers(module)

    def depot(self, name: str) -> DepotRuntime:
        try:
            return self.depots[name]
        except KeyError:
            raise NotFound("depot", name, self.depots, where=f"module {self.name!r}") from None

    def pstate(self, decl_or_name: Any) -> PStateRuntime:
        name = getattr(decl_or_name, "name", decl_or_name)
        if hasattr(decl_or_name, "module") and decl_or_name.module.name != self.name:
            raise NotFound("PState", f"{decl_or_name.module.name}.{name}", self.pstates, where=f"module {self.name!r}")
        try:
            return self.pstates[name]
        except (KeyError, TypeError):
            raise NotFound("PState", str(name), self.pstates, where=f"module {self.name!r}") from None

    def step(self, fn_or_name: Any) -> Any:
        name = getattr(fn_or_name, "__name__", fn_or_name)
        step = self.steps.get(name) if isinstance(name, str) else None
        if step is None or (callable(fn_or_name) and step.fn is not fn_or_name):
            raise NotFound("step", str(name), self.steps, where=f"module {self.name!r} (register it with @module.step)")
        return step


def _check_handlers(module: Module) -> None:
    for topology in module.topologies.values():
        if len(_positional(topology.fn)) < 2:
            takes = "(ctx, events)" if getattr(topology, "per_batch", False) else "(ctx, event)"
            raise DefinitionError(
                f"topology {topology.name!r}: its handler must take {takes}, found {inspect.signature(topology.fn)}"
            )


def _positional(fn: Any) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return ["ctx", "event"]
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _source_partitions(decl: DepotDecl, tasks: int) -> int:
    """An external depot has its source's partitions, each on the task of the same number."""
    partitions: int = decl.source.partitions
    if partitions > tasks:
        raise DefinitionError(
            f"external depot {decl.module.name}.{decl.name}: its source has {partitions} partitions and the module "
            f"{tasks} tasks; each source partition is ingested by one task, so deploy with tasks={partitions} or more"
        )
    return partitions
