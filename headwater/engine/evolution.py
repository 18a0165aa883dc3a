"""Evolving a deployed module: every change between its stored catalog and new code, classified.

`plan` runs at `deploy` over existing data and at `update`, before anything changes. Each
difference between what is stored (the catalog's shapes) and the new module is one `Change`:

- **compatible**: added names, added record fields, added optional event fields, types widened
  so that every stored value still reads the same; it is applied without a word;
- **needs delete**: a removed depot, PState or topology, or a change no stored value can follow
  (a PState moved between partitioned and not, a topology changed kind): `delete=[name]` drops
  the name's data (and starts it empty if the new code still declares it);
- **needs migration**: stored values would not read, or would read differently, under the new
  type; until migrations exist the fix is to keep the old type or delete the data;
- **impossible**: a different task count or replication on existing data.

Anything but compatible that is not declared raises one `DefinitionError` listing every change
with its fix, and nothing is written. So no read can ever meet a stored value its code cannot decode.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from headwater.engine.definitions import Module, check_name
from headwater.engine.events import EVENT_VERSION_MAX
from headwater.engine.meta import DEPOT_KEY, IDEM_OPEN_PREFIX
from headwater.engine.mirrors import MirrorSource
from headwater.engine.runtime import Catalog
from headwater.errors import DefinitionError
from headwater.schema import Schema, as_schema, encode_key
from headwater.schema.shapes import compare_schemas, compare_types, migrations_added, schema_shape, type_shape
from headwater.storage import Batch, Store

__all__ = ["DELETE_KINDS", "DROPPED_KEY", "Change", "drop_deleted", "module_shapes", "plan"]

DELETE_KINDS = ("depot", "pstate", "topology")


@dataclass(frozen=True)
class Change:
    """One difference between the stored module and new code that the caller must declare."""

    kind: str  # "depot", "pstate", "topology" or "module"
    name: str
    change: str  # what changed, in words
    needs: str  # "delete", "migration" or "impossible"
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "change": self.change, "needs": self.needs, "fix": self.fix}

    def __str__(self) -> str:
        needs = {"delete": "needs delete", "migration": "needs a migration"}.get(self.needs, self.needs)
        return f"{self.kind} {self.name!r}: {self.change} ({needs}: {self.fix})"


def module_shapes(module: Module) -> dict[str, dict[str, Any]]:
    """What `module` stores, as plain data: kept in the catalog, compared at the next update."""
    return {
        "depots": {name: {"event": type_shape(d.event_type), "partitioned": d.partitioned, "source": _source(d),
                          **({"migrated": d.migration.id} if d.migration is not None else {})}
                   for name, d in module.depots.items()},
        "pstates": {name: {"schema": schema_shape(_schema(module, name, p.schema)), "partitioned": p.partitioned}
                    for name, p in module.pstates.items()},
        "topologies": {name: {"kind": "stream" if name in module.streams else "microbatch",
                              "depots": [d.name for d in t.depots]}
                       for name, t in module.topologies.items()},
    }


def _source(depot: Any) -> str | None:
    """What feeds an external depot, by kind (a client-fed depot has none); a mirror, by what it
    mirrors (its stored positions are offsets of that depot, and of no other)."""
    source = getattr(depot, "source", None)
    if source is None:
        return None
    if isinstance(source, MirrorSource):
        return f"MirrorSource({source.upstream}.{source.depot})"
    return type(source).__name__


def _schema(module: Module, name: str, declared: Any) -> Schema:
    try:
        return as_schema(declared)
    except DefinitionError as e:
        raise DefinitionError(f"PState {module.name}.{name}: {e}") from None


def plan(stored: Catalog, module: Module, delete: Sequence[str] = (), *, tasks: int | None = None,
         replication: int | None = None, updating: bool) -> Catalog:
    """The catalog `module` runs with over data stored as `stored`, or DefinitionError with every
    undeclared change. `delete` names what to drop (`"name"`, or `"depot:name"`, `"pstate:name"`,
    `"topology:name"` when one name is several kinds). `stored` is not modified."""
    deleting = _parse_delete(stored, module, delete)
    changes = _changes(stored, module, tasks, replication)
    undeclared = [c for c in changes if c.needs == "impossible" or (c.kind, c.name) not in deleting]
    if undeclared:
        raise DefinitionError(
            f"module {module.name!r} was not {'updated' if updating else 'deployed over its stored data'}, and "
            "nothing changed; each change to its stored data, with its fix:\n"
            + "\n".join(f"  - {c}" for c in undeclared),
            changes=[c.as_dict() for c in undeclared])
    catalog = copy.deepcopy(stored)
    shapes = module_shapes(module)
    if updating or deleting or shapes != stored.shapes:
        catalog.version += 1
    for kind, name in sorted(deleting):
        table = {"depot": catalog.depot_ids, "pstate": catalog.pstate_ids}.get(kind)
        ident = table.pop(name) if table is not None else None
        catalog.dropped.append({"version": catalog.version, "kind": kind, "name": name, "id": ident})
        if kind == "depot":  # its records go: new ones start again at event version 0
            catalog.event_versions.pop(name, None)
            catalog.depot_migrations.pop(name, None)
        migration = catalog.migrations.pop(name, None) if kind == "pstate" else None
        if migration is not None:  # what it had not moved yet goes too
            catalog.dropped.append({"version": catalog.version, "kind": kind, "name": name,
                                    "id": migration["from_id"]})
    _start_migrations(catalog, stored, shapes, deleting)
    catalog.shapes = shapes
    catalog.assign(module)
    return catalog


def _start_migrations(catalog: Catalog, stored: Catalog, shapes: dict[str, Any],
                      deleting: set[tuple[str, str]]) -> None:
    """Give each PState with a newly declared migration a fresh id: its migrated data gets a key
    space of its own, and the old one is read (converted) until the tasks have moved it all."""
    old_depots = (stored.shapes or {}).get("depots", {})
    for name, shape in shapes["depots"].items():
        old = old_depots.get(name)
        if old is None or name not in stored.depot_ids or ("depot", name) in deleting:
            continue
        if shape.get("migrated") is not None and shape.get("migrated") != old.get("migrated"):
            version = catalog.event_versions.get(name, 0) + 1
            if version > EVENT_VERSION_MAX:
                raise DefinitionError(f"depot {name!r} has had {version - 1} event type migrations, the most there "
                                      "can be; delete its records to start again")
            catalog.event_versions[name] = version
            catalog.depot_migrations[name] = {"ids": [shape["migrated"]], "from_version": version - 1,
                                              "version": catalog.version}
    old_pstates = (stored.shapes or {}).get("pstates", {})
    for name, shape in shapes["pstates"].items():
        old = old_pstates.get(name)
        if old is None or name not in stored.pstate_ids or ("pstate", name) in deleting:
            continue
        added = migrations_added(old["schema"], shape["schema"])
        if added:
            from_id = catalog.pstate_ids[name]
            catalog.pstate_ids[name] = catalog.next_id("pstate")
            catalog.migrations[name] = {"ids": added, "from_id": from_id, "from_shape": old["schema"],
                                        "version": catalog.version}


def _parse_delete(stored: Catalog, module: Module, delete: Sequence[str]) -> set[tuple[str, str]]:
    if isinstance(delete, str) or not all(isinstance(d, str) for d in delete):
        raise DefinitionError(f"delete={delete!r} must be a list of names, e.g. delete=['old_counts']")
    present = _stored_names(stored)
    deleting: set[tuple[str, str]] = set()
    for entry in delete:
        kind, _, name = entry.rpartition(":")
        if kind and kind not in DELETE_KINDS:
            raise DefinitionError(f"delete={entry!r}: {kind!r} is not a kind; use 'depot:', 'pstate:' or 'topology:'")
        check_name("deleted", name)
        found = [(k, name) for k in ((kind,) if kind else DELETE_KINDS) if name in present[k]]
        if not found:
            stored_names = sorted({n for names in present.values() for n in names})
            raise DefinitionError(
                f"delete={entry!r}: module {module.name!r} stores no {kind or 'depot, PState or topology'} named "
                f"{name!r}, so there is nothing to delete; stored: {', '.join(stored_names) or 'nothing'}")
        deleting.update(found)
    return deleting


def _stored_names(stored: Catalog) -> dict[str, set[str]]:
    topologies = set((stored.shapes or {}).get("topologies", {}))
    return {"depot": set(stored.depot_ids), "pstate": set(stored.pstate_ids), "topology": topologies}


def _changes(stored: Catalog, module: Module, tasks: int | None, replication: int | None) -> list[Change]:
    changes: list[Change] = []
    if tasks is not None and tasks != stored.tasks:
        changes.append(Change("module", module.name, f"the task count is {stored.tasks}, not {tasks}", "impossible",
                              f"the task count is fixed at first deploy: use tasks={stored.tasks}, or destroy "
                              "the module (its data is lost) and deploy it again"))
    if replication is not None and replication != stored.replication:
        changes.append(Change("module", module.name, f"replication is {stored.replication}, not {replication}",
                              "impossible",
                              f"replication is fixed at first deploy: use replication={stored.replication}"))
    if stored.shapes is None:  # a catalog written before shapes were kept: they are recorded from now on
        changes += _removed(stored, module, "depot", set(stored.depot_ids), module.depots)
        changes += _removed(stored, module, "pstate", set(stored.pstate_ids), module.pstates)
        return changes
    new = module_shapes(module)
    old_depots, old_pstates = stored.shapes.get("depots", {}), stored.shapes.get("pstates", {})
    old_topologies = stored.shapes.get("topologies", {})
    changes += _removed(stored, module, "depot", set(stored.depot_ids), module.depots)
    changes += _removed(stored, module, "pstate", set(stored.pstate_ids), module.pstates)
    changes += _removed(stored, module, "topology", set(old_topologies), module.topologies)
    for name, shape in new["depots"].items():
        old = old_depots.get(name)
        if old is None or name not in stored.depot_ids:
            continue
        changes += _repartitioned("depot", name, old, shape, "records")
        if old.get("source") != shape["source"]:
            changes.append(Change("depot", name, f"its source {old.get('source') or 'none (clients append)'} became "
                                  f"{shape['source'] or 'none (clients append)'}: the positions it stored belong to "
                                  "the old one", "delete", f"delete=[{name!r}] drops its records and positions, or "
                                  "keep the source"))
        declared = shape.get("migrated") is not None and shape.get("migrated") != old.get("migrated")
        if declared and name in stored.depot_migrations:
            running = ", ".join(stored.depot_migrations[name]["ids"])
            changes.append(Change("depot", name, f"migration {shape['migrated']} is declared while migration "
                                  f"{running} is still rewriting its stored events", "impossible",
                                  "update again once cluster.migrations() reports it done"))
        problems = [] if declared else compare_types(old["event"], shape["event"])
        if problems:
            changes.append(Change("depot", name, "its event type changed: " + "; ".join(problems), "migration",
                                  "declare the new type with hw.migrated(NewType, id=..., fn=old_event -> "
                                  "new_event), keep the stored one (add fields with defaults instead), or "
                                  f"delete=[{name!r}] to drop its records"))
    for name, shape in new["pstates"].items():
        old = old_pstates.get(name)
        if old is None or name not in stored.pstate_ids:
            continue
        changes += _repartitioned("pstate", name, old, shape, "data")
        problems = compare_schemas(old["schema"], shape["schema"])
        if problems:
            changes.append(Change("pstate", name, "its schema changed: " + "; ".join(problems), "migration",
                                  "declare the new schema where it changed with hw.migrated(new_schema, id=..., "
                                  f"fn=old_value -> new_value), keep the stored one, or delete=[{name!r}] to "
                                  "drop its data and start it empty"))
        added = migrations_added(old["schema"], shape["schema"])
        if added and name in stored.migrations:
            running = ", ".join(stored.migrations[name]["ids"])
            changes.append(Change("pstate", name, f"migration {', '.join(added)} is declared while migration "
                                  f"{running} is still rewriting its stored data", "impossible",
                                  "update again once cluster.migrations() reports it done, or delete=[...] the "
                                  "PState"))
        if added and shape["schema"].get("migrated") and old["schema"]["k"] == shape["schema"]["k"] == "map" and \
                shape["partitioned"] and old["schema"]["key"] != shape["schema"]["key"]:
            changes.append(Change("pstate", name, "a migration of the whole map changes its key type, which decides "
                                  "the task each key lives on", "delete",
                                  f"delete=[{name!r}] and rebuild it, or migrate its values only"))
    for name, shape in new["topologies"].items():
        old = old_topologies.get(name)
        if old is not None and old["kind"] != shape["kind"]:
            changes.append(Change("topology", name, f"a {old['kind']} topology became a {shape['kind']} one", "delete",
                                  f"delete=[{name!r}] drops its progress and dead letters; it starts again from "
                                  "its start_from"))
    return changes


def _repartitioned(kind: str, name: str, old: dict[str, Any], new: dict[str, Any], what: str) -> list[Change]:
    if old["partitioned"] == new["partitioned"]:
        return []
    return [Change(kind, name, f"partitioned={old['partitioned']} became partitioned={new['partitioned']} (its "
                   f"{what} live on other tasks)", "delete",
                   f"delete=[{name!r}] drops its {what}, or keep partitioned={old['partitioned']}")]


def _removed(stored: Catalog, module: Module, kind: str, old: set[str], new: dict[str, Any]) -> list[Change]:
    what = {"depot": "its records", "pstate": "its data", "topology": "its progress and dead letters"}[kind]
    return [Change(kind, name, f"the {'PState' if kind == 'pstate' else kind} was removed", "delete",
                   f"delete=[{name!r}] drops {what} (a rename is a deletion plus an addition), or declare it again")
            for name in sorted(old - set(new))]


DROPPED_KEY = b"catalog/dropped"  # meta: how many of the catalog's `dropped` entries this store has applied
_TOPOLOGY_PREFIXES = (b"progress/", b"pending/", b"dead/", b"mb/")


def drop_deleted(store: Store, catalog: Catalog) -> int:
    """Delete from `store` the data of every name the catalog dropped since this store last looked.

    Runs in `Task.recover`, before anything reads progress, as one synced batch together with the
    count of drops applied, so a crash repeats it whole or not at all, and a task (or a worker)
    that was down during the update catches up when it opens. Returns how many drops it applied."""
    stored = store.get("meta", DROPPED_KEY)
    done = int(stored) if stored is not None else 0
    todo = catalog.dropped[done:]
    if not todo:
        return 0
    batch = Batch()
    for drop in todo:
        if drop["kind"] == "pstate":
            prefix = encode_key(drop["id"])
            batch.delete_range("pstate", prefix, _after(prefix))
        elif drop["kind"] == "depot":
            tag = DEPOT_KEY.pack(drop["id"], 0)[:2]
            batch.delete_range("depot", tag, _after(tag))
            for prefix in (b"idem/", b"idemres/", IDEM_OPEN_PREFIX):
                batch.delete_range("meta", prefix + tag, _after(prefix + tag))
            for key, _ in store.iterate("meta", b"progress/", b"progress0"):
                if key.endswith(b"/" + tag):
                    batch.delete("meta", key)
            for key, _ in store.iterate("meta", b"pending/", b"pending0"):
                if key[key.index(b"/", len(b"pending/")) + 1:].startswith(tag):
                    batch.delete("meta", key)
        else:
            for prefix in _TOPOLOGY_PREFIXES:
                start = prefix + drop["name"].encode() + b"/"
                batch.delete_range("meta", start, _after(start))
    batch.put("meta", DROPPED_KEY, str(len(catalog.dropped)).encode())
    store.write(batch, sync=True)
    return len(todo)


def _after(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (which never ends in 0xff here)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
