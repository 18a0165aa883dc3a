"""The client half of a cluster: module handles, queries and microbatch helpers over its deployments.

`InProcessCluster` and `LocalCluster` add deploying and their tasks' hosts; a worker process that
serves HTTP has only this half, over the module deployments it hosts.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Generic, TypeVar

from headwater.client.api import DeadLetter, DepotClient, pstate_view
from headwater.client.cluster import ModuleInfo
from headwater.client.seam import ClientTransport, DeployedModule
from headwater.engine.messages import ExternalControl, MbControl, encode
from headwater.engine.query import invoke_query, query_decl
from headwater.engine.runtime import ModuleRuntime
from headwater.errors import AckTimeout, NotFound, QueryTimeout, Unavailable

__all__ = ["CONTROL_WAIT_MAX_S", "QUERY_THREADS_MAX", "ClusterClients"]

QUERY_THREADS_MAX = 8  # queries of one cluster running at once; more wait for a free thread
CONTROL_WAIT_MAX_S = 30.0  # the longest pause/resume waits for task 0 to take it

D = TypeVar("D", bound=DeployedModule)


class _QueryRun:
    """One query on the pool: if its caller gives up, its thread stops holding commits off."""

    __slots__ = ("_lock", "_thread", "_finished")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._finished = False

    def __call__(self, *args: Any) -> Any:
        with self._lock:
            self._thread = threading.get_ident()
        try:
            return invoke_query(*args)
        finally:
            with self._lock:
                self._finished = True

    def abandon(self, transport: ClientTransport) -> None:
        # Under the lock the thread cannot finish and start another query: the hold is this one's.
        with self._lock:
            if self._thread is not None and not self._finished:
                transport.abandon_reads(self._thread)


class ClusterClients(Generic[D]):
    """Clients of the modules in `deployments` (module name -> deployment, kept up to date by the owner)."""

    def __init__(self, deployments: dict[str, D]) -> None:
        self._deployments = deployments
        self._lock = threading.Lock()
        self._closed = False
        self._query_pool = concurrent.futures.ThreadPoolExecutor(QUERY_THREADS_MAX,
                                                                 thread_name_prefix="headwater-query")

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("this cluster is closed; create a new one (it resumes from its data directory)")

    def _deployment(self, module: str) -> D:
        self._check_open()
        deployment = self._deployments.get(module)
        if deployment is None:
            raise NotFound("module", module, self._deployments, where="this cluster")
        return deployment

    def deployment(self, module: str) -> D:
        """The running deployment of `module`: its compiled definition (`.runtime`) and transport.

        For tools built on the cluster (the HTTP server, the web UI); applications use `depot`,
        `pstate` and `query`.
        """
        return self._deployment(module)

    def runtime(self, module: str) -> ModuleRuntime:
        """The compiled definition of deployed module `module` (`NotFound` if it is not deployed):
        for tools built on the cluster, such as the HTTP server, which describes its depots,
        PStates and queries from it."""
        return self._deployment(module).runtime

    def progress(self, module: str) -> dict[str, dict[str, list[int]]]:
        """{topology: {depot: [next offset to process, per partition]}} of `module`."""
        deployment = self._deployment(module)
        runtime, transport = deployment.runtime, deployment.transport
        per_task = transport.read_many([(task, ("progress",)) for task in range(runtime.tasks)])
        result: dict[str, dict[str, list[int]]] = {}
        for topology in runtime.module.topologies.values():
            for decl in topology.depots:
                depot = runtime.depots[decl.name]
                result.setdefault(topology.name, {})[depot.name] = [
                    per_task[depot.task_of_partition(p)].get((topology.name, depot.depot_id), 0)
                    for p in range(depot.partitions)
                ]
        return result

    def migrations(self, module: str) -> list[dict[str, Any]]:
        """The migrations of `module` still rewriting stored data, or finished since the last
        look: per migrated PState or depot, `{"kind", "name", "ids", "version", "moved", "total",
        "done"}` (entries or events rewritten and to rewrite, summed over the tasks; `done` when
        every task is done). A finished one is listed once more, then leaves the catalog.

            cluster.migrations("catalog")
            # [{"kind": "pstate", "name": "albums", "ids": ["songs-v2"], "version": 2, "moved": 512,
            #   "total": 1000, "done": False}]
        """
        deployment = self._deployment(module)
        runtime = deployment.runtime
        catalog = runtime.catalog
        wanted = [("pstate", name, m, runtime.tasks) for name, m in catalog.migrations.items()]
        wanted += [("depot", name, m, runtime.depots[name].partitions) for name, m in catalog.depot_migrations.items()
                   if name in runtime.depots]
        if not wanted:
            return []
        per_task = deployment.transport.read_many([(task, ("migrations",)) for task in range(runtime.tasks)])
        rows = []
        for kind, name, migration, holders in wanted:
            found = [row for answer in per_task for row in answer if (row["kind"], row["name"]) == (kind, name)]
            rows.append({"kind": kind, "name": name, "ids": list(migration["ids"]), "version": migration["version"],
                         "moved": sum(r["moved"] for r in found), "total": sum(r["total"] for r in found),
                         "done": len(found) == holders and all(r["done"] for r in found)})
        if any(row["done"] for row in rows):
            self._settle_migrations(module, [(row["kind"], row["name"]) for row in rows if row["done"]])
        return rows

    def _settle_migrations(self, module: str, done: list[tuple[str, str]]) -> None:
        """Record that these migrations finished on every task (where the catalog is kept)."""

    def modules(self) -> list[ModuleInfo]:
        """The deployed modules, sorted by name (empty once the cluster is closed): each is its
        name, with its `version` (1 at first deploy, one more per update) and task count."""
        deployments = dict(self._deployments)
        return [_info(deployments[name].runtime) for name in sorted(deployments)]

    def depot(self, module: str, depot: str) -> DepotClient:
        """A client of depot `depot` of `module`: append, read and tail its records.

        An unknown module or depot raises `NotFound` (naming the closest match); a closed
        cluster raises `Unavailable`. The client stays valid across `update(module)`.

            deposits = cluster.depot("bank", "deposits")
            deposits.append(Deposit(1, 100))
        """
        deployment = self._deployment(module)
        return DepotClient(deployment, deployment.runtime.depot(depot))

    def pstate(self, module: str, pstate: str, *, task: int | None = None) -> Any:
        """A read-only `View` of PState `pstate` of `module`, over committed state.

        Each read goes to the task owning the path's first key. A read with no key to route by
        (a whole partitioned map, a per-task PState) on a module of several tasks raises
        `PathError`: pass `task=i` (0 to tasks - 1, else `ValueError`) to read that task's part.
        Writes raise `ReadOnlyError`; unknown names raise `NotFound`.

            funds = cluster.pstate("bank", "funds")
            funds[1].get()                                  # 100
            cluster.pstate("bank", "funds", task=0).keys()  # the keys task 0 holds
        """
        return pstate_view(self._deployment(module), pstate, task)

    def query(self, module: str, name: str) -> Any:
        """The query `name` of `module` as a function: call it with the query's arguments.

        `timeout` (seconds, keyword) bounds the wait: the query runs on the cluster's query pool
        and `QueryTimeout` is raised when it takes longer; `timeout=None` runs it in the calling
        thread with no bound.
        """
        deployment = self._deployment(module)
        decl = query_decl(deployment.runtime, name)

        def invoke(*args: Any, timeout: float | None = 30.0, **kwargs: Any) -> Any:
            deployment.check_open()
            if timeout is None:
                return invoke_query(deployment.runtime, deployment.transport, decl, args, kwargs)
            run = _QueryRun()
            future = self._query_pool.submit(run, deployment.runtime, deployment.transport, decl, args, kwargs)
            try:
                return future.result(timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()  # not started yet (the pool was busy): it never will
                run.abandon(deployment.transport)
                raise QueryTimeout(
                    f"query {module}.{name} did not finish within {timeout}s; it runs on to completion in the "
                    "background. Raise the timeout, or narrow the query (ranges with a limit, fewer tasks)"
                ) from None

        invoke.__name__ = name
        invoke.__doc__ = decl.fn.__doc__
        return invoke

    def dead_letters(self, module: str, topology: str) -> list[DeadLetter]:
        """The failed invocations of `topology` kept on every task, by partition, then offset.

        Each `DeadLetter` carries its traceback and event, and `retry()` runs it again. An
        unknown module or topology raises `NotFound`.

            letter, = cluster.dead_letters("bank", "deposit")
            letter.error_type, letter.offset                # ('ValueError', 1)
        """
        deployment = self._deployment(module)
        topologies = deployment.runtime.module.topologies
        if topology not in topologies:
            raise NotFound("topology", topology, topologies, where=f"module {module!r}")
        entries = [e for task in range(deployment.runtime.tasks)
                   for e in deployment.transport.read(task, ("dead_letters", topology))]
        return [DeadLetter(deployment, entry) for entry in sorted(entries, key=lambda e: (e.partition, e.offset, e.id))]

    # ---- microbatch test helpers ----------------------------------------------------------
    def _microbatch_status(self, module: str, topology: str) -> dict[str, Any]:
        deployment = self._deployment(module)
        deployment.check_open()
        return deployment.transport.read(0, ("mb_status", topology))

    def wait_for_microbatch(self, module: str, topology: str, *, processed: int, timeout: float = 30.0) -> int:
        """Wait until `topology` has committed `processed` depot records since deploy; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            status = self._microbatch_status(module, topology)
            if status["processed"] >= processed:
                return status["processed"]
            if time.monotonic() >= deadline:
                raise AckTimeout(
                    f"microbatch topology {module}.{topology} committed {status['processed']} records, not "
                    f"{processed}, within {timeout}s (phase {status['phase']!r}, attempt {status['attempt']}"
                    f"{', paused' if status['paused'] else ''})"
                )
            time.sleep(0.002)

    def pause(self, module: str, topology: str, *, timeout: float = 30.0) -> None:
        """Stop starting new batches of `topology`; returns once its current batch (if any) finished.

        Given an external depot's name instead, stop ingesting from its source: returns once no
        task will append from it, until `resume` (the pause is stored, and outlives restarts)."""
        if self._external_depot(module, topology):
            self._control_source(module, topology, "pause")
            return
        self._control(module, topology, "pause")
        deadline = time.monotonic() + timeout
        while self._microbatch_status(module, topology)["phase"] != "idle":
            if time.monotonic() >= deadline:
                raise AckTimeout(f"microbatch topology {module}.{topology} did not finish its batch within {timeout}s")
            time.sleep(0.002)

    def resume(self, module: str, topology: str) -> None:
        """Let microbatch `topology` start batches again after `pause`; nothing to do if it runs.

        Returns once task 0 has taken the resume; `Unavailable` if it does not within 30 s.
        `NotFound` if `topology` is not a microbatch topology of `module`. Given an external
        depot's name, ingest from its source again, from where the pause left it.
        """
        if self._external_depot(module, topology):
            self._control_source(module, topology, "resume")
            return
        self._control(module, topology, "resume")

    def _external_depot(self, module: str, name: str) -> bool:
        depot = self._deployment(module).runtime.depots.get(name)
        return depot is not None and depot.decl.source is not None

    def _control_source(self, module: str, name: str, action: str) -> None:
        deployment = self._deployment(module)
        depot = deployment.runtime.depots[name]
        message = encode(ExternalControl(depot.depot_id, action))
        for task in range(depot.partitions):
            deployment.transport.send(task, message)
        deadline = time.monotonic() + CONTROL_WAIT_MAX_S
        for task in range(depot.partitions):
            while deployment.transport.read(task, ("external",))[name]["paused"] != (action == "pause"):
                if time.monotonic() >= deadline:
                    raise Unavailable(f"task {task} of module {module!r} did not take the {action} of external "
                                      f"depot {name!r} within {CONTROL_WAIT_MAX_S}s; check cluster.status() and retry")
                time.sleep(0.001)

    def _control(self, module: str, topology: str, action: str) -> None:
        self._microbatch_status(module, topology)  # NotFound for unknown names, before anything is sent
        deployment = self._deployment(module)
        deployment.transport.send(0, encode(MbControl(topology, action)))
        deadline = time.monotonic() + CONTROL_WAIT_MAX_S
        while self._microbatch_status(module, topology)["paused"] != (action == "pause"):
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"task 0 of module {module!r} did not take the {action} of {topology!r} within "
                    f"{CONTROL_WAIT_MAX_S}s; check cluster.status() and retry"
                )
            time.sleep(0.001)


def _info(runtime: ModuleRuntime) -> ModuleInfo:
    catalog = runtime.catalog
    return ModuleInfo(runtime.name, version=catalog.version, tasks=catalog.tasks, replication=catalog.replication)
