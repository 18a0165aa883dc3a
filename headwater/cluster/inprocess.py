"""InProcessCluster: every task of every module in this process, one thread per task.

It is the real engine — RocksDB on disk, group-committed appends, the transport seam — just
without the network, so a unit test exercises exactly what production runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Hashable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from headwater.client.cluster import BackupInfo, ModuleInfo
from headwater.client.replies import ReplyRouter
from headwater.client.seam import DeployedModule
from headwater.cluster.apps import apply_app
from headwater.cluster.backups import (
    STAGING_DIRECTORY,
    CopiedFiles,
    DestinationLock,
    TaskPause,
    check_keep,
    copy_checkpoint,
    describe_backups,
    finish,
    module_record,
    new_backup_id,
    prepare_destination,
    prune_locked,
    staging_directory,
    take_cut,
)
from headwater.cluster.clients import ClusterClients
from headwater.cluster.hosts import SYSTEM_CLOCK, TaskThread, open_resources, stop_hosts
from headwater.cluster.mirrors import check_destroy, check_update, forget_mirrors, in_dependency_order, resolve
from headwater.cluster.transport import InProcessTransport
from headwater.cluster.watching import Hub, WatchedStore
from headwater.engine.definitions import Module
from headwater.engine.evolution import module_shapes, plan
from headwater.engine.runtime import Catalog, ModuleRuntime
from headwater.engine.task import Task
from headwater.errors import BackupError, DefinitionError, NotFound, ResourceError, Unavailable
from headwater.storage import RocksStore

__all__ = ["STATUS_WAIT_MAX_S", "Deployment", "DeploymentBase", "InProcessCluster"]

TASKS_MAX = 1024
STATUS_WAIT_MAX_S = 2.0  # the longest status() waits for the tasks' answers
_clients = itertools.count(1)


class DeploymentBase(DeployedModule):
    """What every kind of deployment shares: an update or a stop tells waiting clients why, and a
    task that stopped on an internal error (its host reports it) fails its clients at once."""

    directory: Path

    def _gone(self) -> str:
        return "no longer deployed in this cluster"

    def where(self, task: int) -> tuple[int | None, int]:
        """(worker, pid) of the process hosting `task`: worker None is this process."""
        return None, os.getpid()

    def followers(self) -> dict[int, list[dict[str, Any]]]:
        """Per replicated task, its followers as its leader sees them (none in one process)."""
        return {}

    def _open(self, module: Module, catalog: Catalog) -> None:
        raise NotImplementedError

    def _stop_tasks(self, reason: str) -> None:
        raise NotImplementedError

    def watch(self, task: int, pstate: str, steps: tuple, callback: Any, label: str, *, on_commit: Any = None) -> Any:
        """A subscription to a PState path of `task` (`View.watch`)."""
        raise Unavailable(f"{label} cannot be watched on this kind of cluster yet: watch it on an "
                          "InProcessCluster")

    def restart(self, module: Module, catalog: Catalog) -> None:
        """Run new code over the same data: stop the tasks, start them again with `module`. If the
        new code's resources cannot be built, the old code starts again and the error is raised."""
        running = self.runtime.module, self.runtime.catalog
        self._stop_tasks(f"module {module.name!r} was updated before the reply came; the event is durable and "
                         "will be processed by the new code")
        try:
            self._open(module, catalog)
        except ResourceError:
            self._open(*running)
            raise

    def sources(self, task: int) -> dict[str, Any]:
        """For status(), when the module has external depots: `{"sources": {depot: {...}}}` of `task`."""
        if not any(depot.decl.source is not None for depot in self.runtime.depots.values()):
            return {}
        try:
            return {"sources": self.transport.read(task, ("external",))}
        except Unavailable:
            return {"sources": None}

    def resource_error(self, task: int) -> str | None:
        """Why `task` waits for its resources (a factory raised after a restart), or None."""
        try:
            described = self.transport.read(task, ("resources",))
        except Unavailable:
            return None
        return described["error"] if isinstance(described, dict) else None

    def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_tasks(f"module {self.runtime.name!r} stopped before the reply came; the event may be durable: "
                         "append again with the same idempotency_key to be sure")


class Deployment(DeploymentBase):
    """One module running: its runtime, tasks, transport and the client endpoint replies come to.

    The object outlives `cluster.update`: clients hold it and find the current runtime and
    transport on it, so their handles keep working across code changes.
    """

    transport: InProcessTransport

    def __init__(self, module: Module, catalog: Catalog, directory: Path, peers: Any = None) -> None:
        self.directory = directory
        self.peers = peers  # the cluster's clients: what the module's mirrors read through
        self.router = ReplyRouter()
        self.client_id = next(_clients)
        self.closed = False
        self.hub = Hub(self)  # the subscriptions, fed by the tasks' writes; it outlives updates
        self._open(module, catalog)

    def watch(self, task: int, pstate: str, steps: tuple, callback: Any, label: str, *, on_commit: Any = None) -> Any:
        self.check_open()
        return self.hub.subscribe(task, pstate, steps, callback, label, on_commit=on_commit)

    def restart(self, module: Module, catalog: Catalog) -> None:
        super().restart(module, catalog)
        self.hub.resync_all()  # the schema may have changed: every subscription starts again

    def _open(self, module: Module, catalog: Catalog) -> None:
        # Clients read `runtime` and `transport` off this object at any moment (an update runs while
        # they append), so both are published only once the transport knows every task.
        runtime = ModuleRuntime(module, catalog)
        transport = InProcessTransport()
        transport.peers = self.peers
        transport.register_client(self.client_id, self.router.deliver)
        tasks: list[Task] = []
        hosts: list[TaskThread] = []
        stores: list[RocksStore] = []
        for task_id in range(catalog.tasks):
            stores.append(RocksStore(self.directory / f"task-{task_id}"))
            store = WatchedStore(stores[-1], self.hub, task_id)
            task = Task(runtime, task_id, store, transport, SYSTEM_CLOCK)
            holder: list[TaskThread] = []
            inbox = transport.register_task(task_id, task.serve_read, partial(_run_round_on, holder))
            holder.append(TaskThread(task, inbox, on_failure=self._task_failed))
            tasks.append(task)
            hosts.append(holder[0])
        error = open_resources(hosts)
        if error is not None:  # nothing started: no task ran a round, and clients never saw these
            stop_hosts(hosts)
            transport.closed = True
            for task in tasks:
                task.store.close()
            raise error
        self.failures = {}
        self.tasks, self.hosts, self.stores = tasks, hosts, stores
        self.runtime, self.transport = runtime, transport
        for host in self.hosts:
            host.start()

    def _task_failed(self, host: TaskThread, error: BaseException) -> None:
        self.failures[host.task.task_id] = repr(error)

    def stop(self) -> None:
        super().stop()
        self.hub.close()

    def _stop_tasks(self, reason: str) -> None:
        stop_hosts(self.hosts)
        self.transport.closed = True
        self.router.fail_all(reason)
        for task in self.tasks:
            task.store.close()


class InProcessCluster(ClusterClients[DeploymentBase]):
    """An embedded cluster: every task of every module on a thread of this process.

    It is the whole engine — one RocksDB per task under `<path>/<module>/task-<i>`,
    group-committed appends, recovery — without the network. With `path=None` the data lives in
    a temporary directory removed by `close()`; with a path it stays there, and a new cluster
    over it resumes each module where it stopped. Use it as a context manager, or call `close()`.

        with hw.InProcessCluster() as cluster:
            cluster.deploy(bank, tasks=4)
            cluster.depot("bank", "deposits").append(Deposit(1, 100))["deposit"]   # 100
            cluster.pstate("bank", "funds")[1].get()                                 # 100
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._temporary = path is None
        self.path = Path(tempfile.mkdtemp(prefix="headwater-")) if path is None else Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._backing_up = threading.Lock()  # one backup at a time: they share the staging folder
        super().__init__({})

    def __repr__(self) -> str:
        return f"<InProcessCluster {str(self.path)!r} modules={sorted(self._deployments)}>"

    # ---- deploying ------------------------------------------------------------------------
    def deploy(self, module: Module, *, tasks: int | None = None, replication: int | None = None,
               delete: Sequence[str] = ()) -> None:
        """Run `module` with `tasks` tasks; over existing data, reattach to it (same task count).

        `replication` above 1 keeps each task's store on that many worker processes, which
        threads of one process cannot: it needs a `LocalCluster` or a `RayCluster`. Over existing
        data, new code is checked against what is stored, as by `update` (and `delete` is as there)."""
        if not isinstance(module, Module):
            raise DefinitionError(f"deploy() takes a headwater.Module, not {type(module).__name__}")
        with self._lock:
            self._check_open()
            if module.name in self._deployments:
                raise DefinitionError(f"module {module.name!r} is already deployed; "
                                      "use cluster.update(module) to change it")
            fresh = not (self.path / module.name / "module.json").exists()
            try:
                self._deployments[module.name] = self._start(module, tasks, replication, delete)
            except BaseException:
                if fresh:  # what its mirrors asked their upstreams to keep, they need not
                    forget_mirrors(module, self._deployments)
                raise

    def update(self, module: Module, *, delete: Sequence[str] = (), dry_run: bool = False) -> ModuleInfo:
        """Replace a deployed module's code with a new version of the same name, keeping its data.

        Every change to what is stored is checked first: one that stored data cannot follow
        (a removed or incompatibly changed depot, PState or topology) raises `DefinitionError`
        listing each with its fix, and nothing changes, unless its name is in `delete`, which
        drops that name's data (it starts empty if the new code still declares it). Each update
        raises the module's version by one; returns the module as `modules()` lists it. With
        `dry_run=True` it only checks, and returns what the version would be.

            cluster.update(bank_v2, delete=["old_counts"]).version   # 2
        """
        if not isinstance(module, Module):
            raise DefinitionError(f"update() takes a headwater.Module, not {type(module).__name__}")
        with self._lock:
            self._check_open()
            deployment = self._deployments.get(module.name)
            if deployment is None:
                raise NotFound("module", module.name, self._deployments, where="this cluster")
            previous = _load_catalog(self.path / module.name / "module.json")
            check_update(module, self._deployments)
            catalog = self._catalog(module, None, None, delete, updating=True, save=not dry_run)
            if not dry_run:
                running = deployment.runtime.module
                try:
                    deployment.restart(module, catalog)
                except ResourceError:  # the old code runs again (nothing of the new one started): so does its catalog
                    if previous is not None:
                        _save_catalog(self.path / module.name / "module.json", previous)
                    raise
                forget_mirrors(running, self._deployments, keep=module)
            return ModuleInfo(module.name, version=catalog.version, tasks=catalog.tasks,
                              replication=catalog.replication)

    def apply_app(self, source: bytes | str, *, filename: str = "app.py", delete: Sequence[str] = (),
                  dry_run: bool = False, tasks: int = 1) -> list[dict[str, Any]]:
        """Load an app file's new source apart from the running code, check every module it
        defines against what is deployed, then update them (and deploy new ones with `tasks`).
        Code that does not load, or an undeclared incompatible change, raises `DefinitionError`
        and changes nothing. `delete` entries are `"module/name"` (`"name"` for a one-module
        file). What `headwater update` and `headwater serve --reload` do."""
        return apply_app(self, source, filename=filename, delete=delete, dry_run=dry_run, tasks=tasks)

    def destroy(self, name: str) -> None:
        """Stop a module and delete all its data."""
        with self._lock:
            deployment = self._deployment(name)
            check_destroy(name, self._deployments)
            deployment.stop()
            del self._deployments[name]
            forget_mirrors(deployment.runtime.module, self._deployments)
            shutil.rmtree(deployment.directory, ignore_errors=True)

    def _start(self, module: Module, tasks: int | None, replication: int | None,
               delete: Sequence[str]) -> DeploymentBase:
        if replication not in (None, 1):
            raise DefinitionError(
                f"replication={replication!r}: an InProcessCluster runs every task in this process, so a copy "
                "on another worker cannot exist; deploy with replication on a LocalCluster or a RayCluster")
        return Deployment(module, self._catalog(module, tasks, replication, delete), self.path / module.name, self)

    def _replication_max(self) -> int:
        """The most copies of a task this cluster can keep: one per worker."""
        return 1

    def _settle_migrations(self, module: str, done: list[tuple[str, str]]) -> None:
        """A migration every task finished leaves the catalog: from the next open a PState is read
        with the plain new layout (its old id retired by a drop, which finds nothing left), and a
        depot's events all carry its current event version."""
        with self._lock:
            deployment = self._deployments.get(module)
            if deployment is None:
                return
            path = self.path / module / "module.json"
            stored = _load_catalog(path)
            if stored is None:
                return
            live = deployment.runtime.catalog
            for kind, name in done:
                if kind == "depot":
                    stored.depot_migrations.pop(name, None)
                    live.depot_migrations.pop(name, None)
                    continue
                migration = stored.migrations.pop(name, None)
                if migration is not None:
                    stored.dropped.append({"version": stored.version, "kind": "pstate", "name": name,
                                           "id": migration["from_id"]})
                live.migrations.pop(name, None)  # `migrations()` lists it no more
            _save_catalog(path, stored)

    def _catalog(self, module: Module, tasks: int | None, replication: int | None = None,
                 delete: Sequence[str] = (), *, updating: bool = False, save: bool = True) -> Catalog:
        """The catalog `module` runs with: new, or the stored one checked against the new code
        (`evolution.plan`), then saved. Nothing is saved when a check fails."""
        directory = self.path / module.name
        catalog_path = directory / "module.json"
        stored = _load_catalog(catalog_path)
        replication_max = self._replication_max()
        others = {name: d for name, d in self._deployments.items() if name != module.name}
        resolve(module, stored.tasks if stored is not None else (tasks if isinstance(tasks, int) else 1), others,
                stored.depot_ids if stored is not None else (), announce=save)
        if stored is None:
            count = 1 if tasks is None else tasks
            if not isinstance(count, int) or not 1 <= count <= TASKS_MAX:
                raise DefinitionError(f"tasks={tasks!r} must be an int from 1 to {TASKS_MAX}")
            copies = 1 if replication is None else replication
            if not isinstance(copies, int) or isinstance(copies, bool) or not 1 <= copies <= replication_max:
                raise DefinitionError(
                    f"replication={replication!r} must be an int from 1 to {replication_max}: each copy of a task "
                    f"lives on another worker, and this cluster has {replication_max}")
            if delete:
                raise DefinitionError(f"delete={list(delete)!r}: module {module.name!r} has no stored data at "
                                      f"{str(directory)!r}, so there is nothing to delete; deploy without delete")
            catalog = Catalog(module.name, count, replication=copies, shapes=module_shapes(module))
            catalog.assign(module)
        else:
            if stored.replication > replication_max and replication in (None, stored.replication):
                raise DefinitionError(
                    f"module {module.name!r} is stored with replication={stored.replication}, which needs as many "
                    f"workers; this cluster has {replication_max}")
            catalog = plan(stored, module, delete, tasks=tasks, replication=replication, updating=updating)
        runtime_check = ModuleRuntime(module, catalog)  # every definition error surfaces before anything is written
        del runtime_check
        if save:
            directory.mkdir(parents=True, exist_ok=True)
            _save_catalog(catalog_path, catalog)
        return catalog

    # ---- backups --------------------------------------------------------------------------
    def backup(self, destination: str | os.PathLike[str], *, keep: int | None = None) -> BackupInfo:
        """Write a consistent, incremental backup of every deployed module to `destination`.

        Every task is held between rounds at once, each store is checkpointed (its task runs
        again as soon as that is taken: appends wait at most about `BACKUP_PAUSE_MAX_S`), and
        the checkpoints are copied into `destination` while the modules run on, skipping every
        file an earlier backup there already holds. The backup counts only once its manifest is
        published, last: a crash before that leaves the previous backup whole. `hw.restore`
        lays one out as a data directory. With worker processes, `destination` must be a path
        every worker can write (this machine, or a shared filesystem). One backup writes into a
        destination at a time: another one there is refused with `BackupError`. `keep=N` then
        deletes all but the N newest backups there, and the files only they named.

            info = cluster.backup("backups", keep=7)
            info.bytes_copied, info.stall_s     # (18_233_421, 0.004)
        """
        if keep is not None:
            check_keep(keep)
        started = time.monotonic()
        destination = Path(os.path.abspath(destination))
        with self._backing_up, contextlib.ExitStack() as held:
            self._check_open()
            try:
                held.enter_context(DestinationLock(destination))
                prepare_destination(destination)
            except OSError as e:
                raise BackupError(f"cannot write a backup to {str(destination)!r}: {e}") from e
            shutil.rmtree(self.path / STAGING_DIRECTORY, ignore_errors=True)  # what a crashed backup left
            backup_id = new_backup_id(next(reversed(describe_backups(destination)), None))
            staging = staging_directory(self.path, backup_id)
            try:
                records, copied, stall_s = self._back_up(staging, destination)
                info = finish(destination, backup_id, records, copied, started=started, stall_s=stall_s)
                if keep is not None:
                    pruned = prune_locked(destination, keep)
                    info = dataclasses.replace(info, backups_removed=pruned["removed"],
                                               bytes_removed=pruned["bytes_removed"])
                return info
            except OSError as e:
                raise BackupError(f"cannot write a backup to {str(destination)!r}: {e}; give a directory this "
                                  "process (and every worker) can write") from e
            finally:
                shutil.rmtree(self.path / STAGING_DIRECTORY, ignore_errors=True)

    def _back_up(self, staging: Path, destination: Path) -> tuple[dict[str, Any], dict[Hashable, CopiedFiles], float]:
        """Take the cut (under the cluster's lock: no deploy or update meanwhile), then copy it out."""
        with self._lock:
            self._check_open()
            records = {name: module_record(d.directory) for name, d in self._deployments.items()}
            tasks = [((name, task), host, d.stores[task]) for name, d in self._deployments.items()
                     if isinstance(d, Deployment) for task, host in enumerate(d.hosts)]
            checkpoints = take_cut(TaskPause(tasks), staging)
        copied = {key: copy_checkpoint(path, destination) for key, (path, _) in checkpoints.items()}
        return records, copied, max((held for _, held in checkpoints.values()), default=0.0)

    # ---- clients --------------------------------------------------------------------------
    def status(self) -> dict[str, list[dict[str, Any]]]:
        """Per module, per task in order: where it runs, and whether it answers.

        Every task is asked (a `Ping` through its inbox, answered from its next round), so `up`
        means the task runs rounds now, not that a flag says so; a task that does not answer within
        `STATUS_WAIT_MAX_S` (busy in a long handler, stopped, or its worker down) is not up.
        `worker` is None for a thread of this process; `appends_in_flight` is the client appends
        the task holds (None when it did not answer); `error` is the internal error a task
        stopped on, if any.

            cluster.status()["bank"]
            # [{"task": 0, "worker": None, "pid": 4242, "up": True, "appends_in_flight": 0, "error": None,
            #   "followers": []}, ...]

        `followers` lists a replicated task's other copies: `{"worker", "in_sync", "lag"}` (lag in
        write batches the leader wrote that the follower has not applied; None when not known).
        """
        self._check_open()
        deployments = dict(self._deployments)
        asked = {name: deployment.ping() for name, deployment in deployments.items()}
        deadline = time.monotonic() + STATUS_WAIT_MAX_S
        status: dict[str, list[dict[str, Any]]] = {}
        for name, deployment in deployments.items():
            rows = []
            answers = deployment.answers(asked[name], deadline)
            followers = deployment.followers()
            for task, pong in enumerate(answers):
                worker, pid = deployment.where(task)
                error = deployment.failures.get(task)
                if pong is None and error is None:
                    error = deployment.resource_error(task)
                rows.append({"task": task, "worker": worker, "pid": pid, "up": pong is not None,
                             "appends_in_flight": pong.appends_in_flight if pong is not None else None,
                             "error": error, "followers": followers.get(task, []),
                             **self._front_of(worker), **deployment.sources(task)})
            status[name] = rows
        return status

    def _front_of(self, worker: int | None) -> dict[str, Any]:
        """What the fronts (HTTP servers) of the process hosting a task said of themselves."""
        return {}

    def close(self) -> None:
        """Stop every module's tasks, then delete the data directory if it is a temporary one.

        Appenders still waiting for an ack get `Unavailable` (the event may be durable: append
        again with the same `idempotency_key`); close waits for queries still running. After
        it, deploying, appends, reads and queries (on the cluster or on handles it gave) raise
        `Unavailable`, tails end, and `modules()` is empty; closing again does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # A mirroring module stops before what it mirrors: its readers never find the upstream gone.
            modules = in_dependency_order([d.runtime.module for d in self._deployments.values()])
            for module in reversed(modules):
                self._deployments[module.name].stop()
            self._deployments.clear()
            self._query_pool.shutdown(wait=True, cancel_futures=True)
            if self._temporary:
                shutil.rmtree(self.path, ignore_errors=True)


def _run_round_on(holder: list[TaskThread], timeout_s: float) -> None:
    """Run a round on the host in `holder`, which is made after the inbox that calls this."""
    holder[0].run_round_here(timeout_s)


def _load_catalog(path: Path) -> Catalog | None:
    if not path.exists():
        return None
    return Catalog.from_json(json.loads(path.read_text()))


def _save_catalog(path: Path, catalog: Catalog) -> None:
    # Write-then-rename so a crash leaves either the old catalog or the new one, never half of one.
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as f:
        json.dump(catalog.to_json(), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
