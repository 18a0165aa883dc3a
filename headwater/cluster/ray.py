"""RayCluster: LocalCluster's worker processes, placed on the nodes of a Ray cluster and supervised by Ray.

Everything but the control plane is `LocalCluster`'s: the supervisor (this process, where the
clients are) ships each module by value, task i runs on worker i mod `workers`, clients and tasks
talk over headwater's own framed TCP links, and each worker keeps its tasks' RocksDB under `path`
on its own node's disk. What Ray does is start, place and watch the workers: each worker is a Ray
actor whose process runs a `WorkerNode`, spread over the nodes in proportion to their CPUs, and
each actor runs a method that never returns, whose result fails when the actor dies (a process
killed, a node lost); a watch thread waits on those with `ray.wait`. As for a
`LocalCluster`, a worker that dies (seen by Ray, or by its link closing) is created again: its
tasks recover from its data directory, or, replicated, their followers take them over first;
clients of its tasks hear `Unavailable` meanwhile.

Addresses: when every node of the Ray cluster is on this machine (a local Ray, or several nodes
started on one machine) every link stays on loopback, as for `LocalCluster`. Otherwise the
supervisor listens on this node's address, each worker on its own node's address, and they
connect to each other there (decided when the cluster starts).

Ray is imported only when a `RayCluster` is made, so `import headwater` never needs it.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from headwater.cluster.local import WORKERS_MAX, LocalCluster, WorkerProcess, _Workers
from headwater.cluster.worker import WorkerNode
from headwater.errors import HeadwaterError, Unavailable

__all__ = ["ACTOR_EXIT_S", "RAY_CALL_S", "RAY_WATCH_S", "RayCluster", "RayNotInstalled", "RayWorker"]

_log = logging.getLogger("headwater.cluster")

RAY_WATCH_S = 0.5  # the longest the watch thread's ray.wait blocks before it looks for workers started since
ACTOR_EXIT_S = 10.0  # the longest killing a worker waits for its actor's process to be gone
RAY_CALL_S = 2.0  # the longest status() waits for Ray to say where a worker runs (a starting one: not yet)
PID_POLL_S = 0.005  # how often a wait for a process to be gone looks again
RAY_CONNECT_S = 10.0  # the longest a Ray head's HOST:PORT may take to accept a connection (Ray itself waits minutes)
LOOPBACK = "127.0.0.1"


class RayNotInstalled(HeadwaterError, ImportError):
    """`RayCluster` needs Ray, which is an optional dependency: `pip install 'headwater[ray]'`."""


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise RayNotInstalled(f"RayCluster needs Ray, which is not installed here ({e}): install "
                              "'headwater[ray]' (pip install 'headwater[ray]') on this machine and on every "
                              "node of the Ray cluster") from None


def _search_path() -> list[str]:
    """Where this process imports from, as absolute paths (what LocalCluster gives its workers)."""
    return [p or os.getcwd() for p in sys.path]


@contextmanager
def _imports_as_here() -> Iterator[None]:
    """While Ray starts here: its processes, and so the workers, import from where this process
    does (PYTHONPATH, as LocalCluster's workers get it), from the class of the actor on."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(_search_path())
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _check_reachable(address: str) -> None:
    """Fail within RAY_CONNECT_S if nothing listens at a "host:port" address: `ray.init` would
    retry for many minutes before saying so."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_S).close()
    except OSError as e:
        raise Unavailable(f"nothing answers at {address} ({e.strerror or e}); is a Ray head running there "
                          "(`ray start --head` prints its address)?") from None


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until process `pid` of this machine is gone (True), or `timeout_s` passed (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it exists, as another user's: the pid was reused, or it is still there
        if time.monotonic() > deadline:
            return False
        time.sleep(PID_POLL_S)


class _WorkerActor:
    """The body of a worker's Ray actor: its process is the worker (`WorkerNode`) and stays so."""

    def __init__(self, worker_id: int, supervisor_host: str, supervisor_port: int, supervisor_ip: str,
                 search_path: list[str], predecessor: tuple[str, int] | None) -> None:
        ray = _import_ray()
        logging.basicConfig(level=logging.WARNING, format=f"worker {worker_id}: %(levelname)s %(name)s: %(message)s")
        self._ip = ray.util.get_node_ip_address()
        self._node = ray.get_runtime_context().get_node_id()
        here = self._ip == supervisor_ip
        if supervisor_host == LOOPBACK and not here:
            raise Unavailable(
                f"worker {worker_id} was placed on node {self._ip}, another machine than its supervisor's "
                f"({supervisor_ip}), which listens on loopback because every node of the Ray cluster was on its "
                "machine when the RayCluster started; start the RayCluster again now that the cluster spans machines")
        if here:  # the supervisor's machine: where it imports from (a test's modules, an app's package) serves here
            sys.path.extend(p for p in search_path if p not in sys.path)
        if predecessor is not None and predecessor[0] == self._ip:
            # The worker this one replaces held the same stores: its process may still be exiting.
            _wait_gone(predecessor[1], ACTOR_EXIT_S)
        host = LOOPBACK if supervisor_host == LOOPBACK else self._ip
        self._worker = WorkerNode(worker_id, supervisor_port, host=host, supervisor_host=supervisor_host)

    def describe(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": self._node, "node_ip": self._ip}

    def watch(self) -> None:
        """Never returns: its result fails when this actor dies, which is how the supervisor learns it."""
        threading.Event().wait()


class _Ended(WorkerProcess):
    """What stays of a worker's actor once its cluster closed: how it ended, and no Ray object."""

    def __init__(self, how: str) -> None:
        self._how = how

    def ended(self) -> str | None:
        return self._how

    def kill(self) -> None:
        pass


class RayWorker(WorkerProcess):
    """A worker as a Ray actor, placed on a node by `_Actors.placement`."""

    def __init__(self, actors: _Actors, worker_id: int, host: str, port: int) -> None:
        self._actors = actors
        self._ray = actors.ray
        self.worker_id = worker_id
        self._actor = actors.actor_class.options(scheduling_strategy=actors.placement(worker_id)).remote(
            worker_id, host, port, actors.machine_ip, _search_path(), actors.predecessor(worker_id))
        self.watched = self._actor.watch.remote()
        self._described = self._actor.describe.remote()
        self._info: dict[str, Any] | None = None
        self._ended: str | None = None
        actors.watch(self)

    def ended(self) -> str | None:
        return self._ended

    def died(self) -> None:
        """The watch saw this actor die: say how."""
        try:
            self._ray.get(self.watched, timeout=0)
            reason = "its actor ended"
        except Exception as e:  # RayActorError, ActorDiedError: their message says why
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            init_failed = getattr(e, "actor_init_failed", False)
            reason = (lines[-1] if init_failed else lines[0]) if lines else type(e).__name__
        self._ended = self._ended or f"Ray actor: {reason}"

    def info(self, timeout_s: float = RAY_CALL_S) -> dict[str, Any]:
        """Where the actor runs: {"pid", "node" (the Ray node id), "node_ip"}; {} if Ray cannot say."""
        if self._info is None:
            try:
                self._info = self._ray.get(self._described, timeout=timeout_s)
            except Exception:  # dead before it described itself, or not within the bound
                return {}
        return self._info or {}

    def kill(self) -> None:
        info = self.info(timeout_s=0)
        try:
            self._ray.kill(self._actor, no_restart=True)
        except Exception:  # already gone
            pass
        self._ray.wait([self.watched], timeout=ACTOR_EXIT_S)
        self._ended = self._ended or "killed"
        self._actors.unwatch(self)
        if info:
            self._actors.gone(self.worker_id, info["node_ip"], info["pid"])
            # Ray says an actor is dead a little before its process is: the stores' locks are free only then.
            if info["node_ip"] == self._actors.machine_ip and not _wait_gone(info["pid"], ACTOR_EXIT_S):
                _log.warning("worker %s (pid %s) is still running %ss after Ray killed its actor", self.worker_id,
                             info["pid"], ACTOR_EXIT_S)


def _node_slots(nodes: list[dict[str, Any]]) -> list[str]:
    """Node ids, one per CPU, taking the nodes in turn: [a, b, a, a] for a with 3 CPUs and b with 1.

    Only the live nodes that have CPUs (a head started with `--num-cpus=0` is kept free of work),
    or every live node if none has any."""
    alive = sorted((node for node in nodes if node["Alive"]), key=lambda node: node["NodeID"])
    cpus = {node["NodeID"]: int(node["Resources"].get("CPU", 0)) for node in alive}
    if not any(cpus.values()):
        cpus = dict.fromkeys(cpus, 1)
    slots: list[str] = []
    for turn in range(max(cpus.values(), default=0)):
        slots += [node for node, count in cpus.items() if count > turn]
    return slots


class _Homes:
    """The machine (node address) each worker's stores are on, kept in `ray-workers.json` in the
    cluster's directory: a worker started again goes back there, so its tasks find their data.

    With replication 1 a task's data is on one machine's disk only; if a worker's machine is not
    in the Ray cluster when the worker starts, it starts elsewhere, where its tasks find only what
    that machine's disk holds (nothing, the first time), and that is logged as an error."""

    def __init__(self, directory: Path, count: int) -> None:
        self._path = directory / "ray-workers.json"
        try:
            stored = json.loads(self._path.read_text()) if self._path.exists() else {}
        except ValueError:  # written with a rename, so only a hand edit breaks it: start afresh
            _log.error("%s is not JSON; the workers' machines are chosen afresh", self._path)
            stored = {}
        self._homes = {int(worker): ip for worker, ip in stored.get("homes", {}).items()}
        if stored and stored.get("workers") != count:
            _log.error("this RayCluster has %s workers where the last one over %s had %s: a task's worker is its "
                       "number mod the workers, so tasks now run on other workers, on other machines, where their "
                       "data is not", count, directory, stored.get("workers"))
            self._homes = {}
        self._count = count

    def plan(self, nodes: list[dict[str, Any]]) -> list[str]:
        """The node id for each worker: on its home machine if that is in the cluster, else on the
        node with the fewest workers per CPU (which becomes its home)."""
        slots = _node_slots(nodes)
        if not slots:
            return []
        ip_of = {node["NodeID"]: node["NodeManagerAddress"] for node in nodes}
        cpus = {node: slots.count(node) for node in slots}
        order = list(cpus)  # first come in slots: the tie-break
        placed: dict[str, int] = dict.fromkeys(order, 0)

        def least_loaded(candidates: list[str]) -> str:
            node = min(candidates, key=lambda n: (placed[n] / cpus[n], order.index(n)))
            placed[node] += 1
            return node

        chosen: dict[int, str] = {}
        for worker in range(self._count):  # those whose machine is here first: they have no choice
            there = [n for n in order if ip_of[n] == self._homes.get(worker)]
            if there:
                chosen[worker] = least_loaded(there)
        for worker in range(self._count):
            if worker not in chosen:
                chosen[worker] = least_loaded(order)
                home = self._homes.get(worker)
                if home is not None:
                    _log.error("worker %s's machine %s is not in the Ray cluster: it starts on %s, where its tasks "
                               "find only what that machine's disk holds (with replication 1, their data is on %s)",
                               worker, home, ip_of[chosen[worker]], home)
        plan = [chosen[worker] for worker in range(self._count)]
        homes = {worker: ip_of[node] for worker, node in enumerate(plan)}
        if homes != self._homes:
            self._homes = homes
            self._path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"workers": self._count, "homes": homes}))
            os.replace(temporary, self._path)
        return plan


class _Actors:
    """The workers' actor class, and the thread that watches them die."""

    def __init__(self, ray: Any, machine_ip: str, homes: _Homes) -> None:
        self.ray = ray
        self.machine_ip = machine_ip
        self._homes = homes
        self.actor_class = ray.remote(num_cpus=0, max_concurrency=4, max_restarts=0)(_WorkerActor)
        self._lock = threading.Lock()
        self._watched: dict[Any, RayWorker] = {}  # each worker's never-returning call -> the worker
        self._changed = threading.Event()
        self._last: dict[int, tuple[str, int]] = {}  # worker id -> (node ip, pid) of its previous actor
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="headwater-ray-watch", daemon=True)
        self._thread.start()

    def start(self, worker_id: int, host: str, port: int) -> RayWorker:
        return RayWorker(self, worker_id, host, port)

    def placement(self, worker_id: int) -> Any:
        """Where worker `worker_id` goes: back to its home machine (`_Homes`), else to the nodes that
        have CPUs in turn, no node getting a second worker per CPU before every node has one per CPU.

        Workers reserve no CPU of Ray's (num_cpus=0), so that a node lost leaves room for its workers
        on the others; Ray's SPREAD strategy then leaves zero-CPU actors where it likes (measured:
        two workers on one of two nodes, half the time), and so does a soft node affinity to a node
        that just joined, so each worker is pinned to its node. If that node is lost before the
        worker starts, Ray fails the actor, and the restart that follows plans again.
        """
        plan = self._homes.plan(self.ray.nodes())  # the nodes as they are now: one may have gone, or come
        if not plan:
            return "SPREAD"  # Ray lists no live node: let it place the worker when one comes
        strategies = importlib.import_module("ray.util.scheduling_strategies")
        return strategies.NodeAffinitySchedulingStrategy(plan[worker_id], soft=False)

    def predecessor(self, worker_id: int) -> tuple[str, int] | None:
        return self._last.get(worker_id)

    def gone(self, worker_id: int, node_ip: str, pid: int) -> None:
        self._last[worker_id] = (node_ip, pid)

    def watch(self, worker: RayWorker) -> None:
        with self._lock:
            self._watched[worker.watched] = worker
        self._changed.set()

    def unwatch(self, worker: RayWorker) -> None:
        with self._lock:
            self._watched.pop(worker.watched, None)

    def _watch(self) -> None:
        while not self._closed:
            with self._lock:
                refs = list(self._watched)
            if not refs:
                self._changed.wait(RAY_WATCH_S)
                self._changed.clear()
                continue
            try:
                ready, _ = self.ray.wait(refs, num_returns=1, timeout=RAY_WATCH_S)
            except Exception:  # Ray is shutting down under us: the cluster is closing
                if not self._closed:
                    _log.exception("watching the workers' actors failed; trying again")
                    time.sleep(RAY_WATCH_S)
                continue
            for ref in ready:
                with self._lock:
                    worker = self._watched.pop(ref, None)
                if worker is not None:
                    worker.died()

    def close(self) -> None:
        self._closed = True
        self._changed.set()
        self._thread.join(RAY_WATCH_S + RAY_CALL_S)
        with self._lock:
            self._watched.clear()


class RayCluster(LocalCluster):
    """`LocalCluster`'s workers as Ray actors, spread over the nodes of a Ray cluster; data under `path`.

    `address=None` starts a Ray on this machine (no dashboard; it stops at `close()`), `"auto"`
    joins the Ray cluster this machine is a node of (`ray start --head` / `ray start
    --address=...`), and `"host:port"` the one whose head listens there; if this process is
    already connected to Ray (`ray.init()` was called), the cluster uses that and leaves it
    running. `workers=None` is one worker per CPU of the Ray cluster (at most 64).

    The same interface and recovery as `LocalCluster`: task i runs on worker i mod `workers`, each
    worker keeps its tasks' stores under `path` on its node's disk (a relative `path` is taken
    from this process's working directory, the same on every node), and if a worker dies every
    worker is killed and created again (Ray may place them elsewhere) while calls raise
    `Unavailable`. `status()` rows also say on which Ray `node` (and `node_ip`) each task runs.
    This process must be on a node of the Ray cluster (or reachable from every node); Ray Client
    (`ray://`) addresses are refused.

        with hw.RayCluster(path="data-ray", workers=2) as cluster:
            cluster.deploy(bank, tasks=4)
            cluster.depot("bank", "deposits").append(Deposit(2, 70))["deposit"]   # 70
    """

    def __init__(self, address: str | None = None, path: str | os.PathLike[str] | None = "data", *,
                 workers: int | None = None) -> None:
        if address is not None and (not isinstance(address, str) or address.startswith("ray://")):
            raise ValueError(f"address={address!r} must be None (start Ray here), 'auto' or 'host:port' of a Ray "
                             "cluster's head; a Ray Client address (ray://) cannot host workers that reach back "
                             "to this process: run on a node of the cluster with address='auto'")
        if workers is not None and (not isinstance(workers, int) or not 1 <= workers <= WORKERS_MAX):
            raise ValueError(f"workers={workers!r} must be an int from 1 to {WORKERS_MAX}")
        ray = self._ray = _import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            self._init_ray(address)
        try:
            count = workers if workers is not None else min(max(int(ray.cluster_resources().get("CPU", 1)), 1),
                                                            WORKERS_MAX)
            machine_ip = ray.util.get_node_ip_address()
            ips = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
            self._host = LOOPBACK if ips <= {machine_ip} else machine_ip
            self._machine_ip = machine_ip
            try:
                super().__init__(Path(path).absolute() if path is not None else None, workers=count)
            except BaseException:
                if hasattr(self, "_actors"):
                    self._actors.close()
                raise
        except BaseException:
            if self._owns_ray:
                ray.shutdown()
            raise

    def _init_ray(self, address: str | None) -> None:
        try:
            if address is None:
                with _imports_as_here():  # "local": a new Ray, never one that `ray start` left running here
                    self._ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                                   logging_level=logging.WARNING)
            else:
                _check_reachable(address)
                self._ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise Unavailable(f"cannot join the Ray cluster at {address!r}: {e}; start one with `ray start --head` "
                              "(then address='auto' on its nodes), or pass address=None to start Ray here") from None

    def _spawn_workers(self, count: int, **options: Any) -> _Workers:
        self._actors = _Actors(self._ray, self._machine_ip, _Homes(self.path, count))
        return super()._spawn_workers(count, start=self._actors.start, host=self._host, **options)

    def __repr__(self) -> str:
        return (f"<RayCluster {str(self.path)!r} workers={self._workers.count} "
                f"nodes={len({self._front_of(w).get('node') for w in range(self._workers.count)})} "
                f"modules={sorted(self._deployments)}>")

    def _front_of(self, worker: int | None) -> dict[str, Any]:
        found = super()._front_of(worker)
        if worker is None:
            return found
        process = self._workers.workers[worker].process
        assert isinstance(process, RayWorker)
        info = process.info()
        return {**found, "node": info.get("node"), "node_ip": info.get("node_ip")}

    def close(self) -> None:
        """As `LocalCluster.close`, then disconnect from Ray (and stop it) if this cluster started it."""
        if self._closed:
            return
        try:
            super().close()
        finally:
            self._actors.close()
            # Actor handles and object refs must be dropped while Ray is still up: one collected
            # after `ray.shutdown()` (on any thread, whenever the collector runs) makes Ray end
            # this whole process ("the core worker has already been shutdown").
            for worker in self._workers.workers:
                worker.process = _Ended(worker.process.ended() or "the cluster closed")
            gc.collect()
            if self._owns_ray and self._ray.is_initialized():
                self._ray.shutdown()
