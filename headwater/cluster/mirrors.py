"""The dependency graph between a cluster's modules: mirrors checked and resolved at deploy,
update and destroy, before anything changes.

A module that mirrors another (`mirror_depot`, `mirror_pstate`, `mirror_query`) needs it
deployed first, with every mirrored name; the graph stays acyclic; a module others mirror cannot
be destroyed, nor updated to lose a name they use. `resolve` also fixes what a mirrored depot
takes from its upstream: its event type and how its partitions map onto the upstream's.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from headwater.engine import messages
from headwater.engine.definitions import Module
from headwater.engine.messages import MirrorForget
from headwater.engine.mirrors import MirrorSource, send_progress
from headwater.errors import DefinitionError, NotFound, Unavailable

__all__ = ["check_destroy", "check_update", "dependents", "forget_mirrors", "in_dependency_order", "resolve"]

_TABLES = {"depot": "depots", "pstate": "pstates", "query": "queries"}


def resolve(module: Module, tasks: int, deployments: Mapping[str, Any], stored_depots: Container[str] = (), *,
            announce: bool = True) -> None:
    """Check that everything `module` mirrors is deployed, and fit its mirrored depots to their
    upstreams (event type, partitions). Raises `DefinitionError` naming the modules involved.

    A mirrored depot not in `stored_depots` is new: it starts where the upstream is now, and the
    upstream keeps everything from there on for it (told so only if `announce`: not on a dry run)."""
    for upstream, names in module.dependencies().items():
        deployment = deployments.get(upstream)
        if deployment is None or getattr(deployment, "closed", False):
            first = ", ".join(f"{kind} {name!r}" for kind, name in names)
            raise DefinitionError(
                f"module {module.name!r} mirrors {first} of module {upstream!r}, which is not deployed on this "
                f"cluster; deploy {upstream!r} first")
        runtime = deployment.runtime
        for kind, name in names:
            table = getattr(runtime, _TABLES[kind])
            if name not in table:
                raise DefinitionError(f"module {module.name!r} mirrors a {kind} of module {upstream!r}: "
                                      f"{NotFound(kind, name, table, where=f'module {upstream!r}')}")
    _check_acyclic(module, deployments)
    for decl in module.depots.values():
        source = decl.source
        if not isinstance(source, MirrorSource):
            continue
        upstream = deployments[source.upstream].runtime.depots[source.depot]
        source.upstream_partitions = upstream.partitions
        # Keyed upstream, other task count: each partition picks its keys out of every upstream
        # partition, so that handlers find their keys on their own task, as for a local depot.
        source.by_key = upstream.decl.partition_by is not None and 1 < upstream.partitions != tasks
        source.partitions = tasks if source.by_key else min(tasks, upstream.partitions)
        decl.partitioned = source.partitions > 1
        if decl.event_type is Any:
            decl.event_type = upstream.decl.event_type
        subscribed = [t for t in module.topologies.values() if decl in t.depots]
        source.from_beginning = any(t.start_from != "end" for t in subscribed)
        if decl.name not in stored_depots:
            source.start_at = _start(source, deployments[source.upstream], announce)


def _start(source: MirrorSource, deployment: Any, announce: bool) -> list[list[int]]:
    """Where a new mirror begins in each upstream partition; the upstream tasks hold it from there."""
    depot = deployment.runtime.depots[source.depot]
    bounds = [deployment.transport.read(depot.task_of_partition(p), ("depot_bounds", depot.depot_id))
              for p in range(depot.partitions)]
    offsets = [start if source.from_beginning else end for start, end in bounds]
    if announce:
        send_progress(deployment, source, enumerate(offsets))
    return [[offsets[p] for p in source.assigned(partition)] for partition in range(source.partitions)]


def check_update(module: Module, deployments: Mapping[str, Any]) -> None:
    """New code for a deployed module must keep every name another module mirrors."""
    lost = []
    for user, kind, name in dependents(module.name, deployments):
        if name not in getattr(module, _TABLES[kind]):
            lost.append(f"{kind} {name!r} (mirrored by module {user!r})")
    if lost:
        raise DefinitionError(f"module {module.name!r} would lose {', '.join(lost)}; keep them, or update the "
                              "modules that mirror them first so that they no longer do")


def check_destroy(name: str, deployments: Mapping[str, Any]) -> None:
    users = sorted({user for user, _, _ in dependents(name, deployments)})
    if users:
        raise DefinitionError(f"module {name!r} cannot be destroyed: module(s) {', '.join(map(repr, users))} mirror "
                              f"it; destroy them first, or update them so that they no longer mirror {name!r}")


def dependents(name: str, deployments: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(module, kind, mirrored name) for every deployed module that mirrors something of `name`."""
    found: list[tuple[str, str, str]] = []
    for user, deployment in sorted(deployments.items()):
        if user == name:
            continue
        for upstream, names in deployment.runtime.module.dependencies().items():
            if upstream == name:
                found.extend((user, kind, mirrored) for kind, mirrored in names)
    return found


def forget_mirrors(module: Module, deployments: Mapping[str, Any], keep: Module | None = None) -> None:
    """Tell the upstream tasks that `module`'s mirrored depots (those `keep`, its new code, no longer
    has) hold their retention back no more."""
    kept = {d.source.consumer for d in (keep.depots.values() if keep else ()) if isinstance(d.source, MirrorSource)}
    for decl in module.depots.values():
        source = decl.source
        if not isinstance(source, MirrorSource) or source.consumer in kept:
            continue
        upstream = deployments.get(source.upstream)
        if upstream is None:
            continue
        message = messages.encode(MirrorForget(source.consumer))
        for task in range(upstream.runtime.tasks):
            try:
                upstream.transport.send(task, message)
            except Unavailable:
                pass  # stopped meanwhile: nothing to hold back


def _check_acyclic(module: Module, deployments: Mapping[str, Any]) -> None:
    graph = {name: set(d.runtime.module.dependencies()) for name, d in deployments.items()}
    graph[module.name] = set(module.dependencies())
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise DefinitionError(f"modules would mirror each other in a cycle ({cycle}); a module can only mirror "
                                  "modules that do not depend on it")
        path.append(name)
        for upstream in sorted(graph.get(name, ())):
            visit(upstream)
        path.pop()

    visit(module.name)


def in_dependency_order(modules: list[Module]) -> list[Module]:
    """`modules` with each after the ones it mirrors (otherwise in the given order): the order to
    deploy an app file's modules in. A cycle is left as it is, for `resolve` to report."""
    by_name = {m.name: m for m in modules}
    ordered: list[Module] = []
    visiting: set[str] = set()

    def place(module: Module) -> None:
        if module in ordered or module.name in visiting:
            return
        visiting.add(module.name)
        for upstream in module.dependencies():
            if upstream in by_name:
                place(by_name[upstream])
        visiting.discard(module.name)
        ordered.append(module)

    for module in modules:
        place(module)
    return ordered
