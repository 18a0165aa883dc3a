"""LocalCluster: the tasks of every module in worker processes on this machine, one per core by default.

The supervisor (this process, where the clients are) starts `workers` worker processes
(`headwater.cluster.worker`), places task i on worker i mod workers, and ships each module to
them by value with cloudpickle, so a module defined in a script, a test or a notebook cell
deploys as it is. Clients here talk to the tasks through `SupervisorTransport`: appends are
sent to the owning worker (whose task admits them or answers Busy), reads and query holds are calls to it, and replies
come back on the worker's link. Between workers, tasks' messages go straight from one to the other.

When a worker dies the supervisor starts it again: its tasks recover from their data directories
and resend what the crash cut short, and every other task of each module sends again what was in
flight to or from it (`Redrive`), so nothing acknowledged is lost and every guarantee holds as
across a crash of one process, while the other workers keep serving. Clients waiting for the dead
worker's tasks hear `Unavailable` and retry what is safe to retry.
"""

from __future__ import annotations

import collections
import concurrent.futures
import importlib.machinery
import inspect
import io
import json
import logging
import marshal
import os
import socket
import subprocess
import sys
import threading
import time
import types
import typing
from collections.abc import Callable, Hashable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec

from headwater.client.replies import ReplyRouter
from headwater.client.seam import ClientTransport, check_may_wait
from headwater.cluster.backups import BACKUP_ATTEMPTS_MAX, BACKUP_PAUSE_MAX_S, CopiedFiles, module_record
from headwater.cluster.inprocess import DeploymentBase, InProcessCluster
from headwater.cluster.replication import ReplicaSet
from headwater.cluster.watching import RemoteWatches
from headwater.cluster.wire import CLIENT_PROCESS_SHIFT, Call, Failed, Hello, Link, ToClient, ToTask, WatchDiffs
from headwater.cluster.worker import RemoteGate
from headwater.engine import messages
from headwater.engine.definitions import Module
from headwater.engine.messages import Redrive
from headwater.engine.runtime import Catalog, ModuleRuntime
from headwater.engine.transport import check_message
from headwater.errors import DefinitionError, NotFound, ResourceError, Unavailable

__all__ = ["LocalCluster", "WORKERS_MAX", "SubprocessWorker", "WorkerProcess"]

_log = logging.getLogger("headwater.cluster")

WORKERS_MAX = 64
WORKER_START_S = 30.0  # the longest a worker may take to start and say hello
MONITOR_POLL_S = 0.05  # how often the supervisor checks that its workers live
HEARTBEAT_S = 0.5  # how often the supervisor asks each worker to answer
WORKER_SILENT_S = 3.0  # a worker that does not answer for this long is killed and restarted
FAILOVERS_KEPT = 1000  # failover times a LocalCluster remembers
CLOSE_JOIN_S = 15.0  # the longest close() waits for a heartbeat or a restart under way to end
DEPLOY_CALL_S = 120.0  # the longest opening a module's tasks on a worker may take (recovery reads its store)
FRONT_CALL_S = 60.0  # the longest starting, or gracefully stopping, a worker's fronts (HTTP servers) may take
STATUS_CALL_S = 5.0  # the longest status() waits for a worker to describe its leaders' followers
SUPERVISOR_CALL_THREADS = 4  # calls from workers (status) the supervisor serves at once
# A worker lets go of the tasks it holds for a backup by itself after this, if the supervisor has not
# asked for their checkpoints by then (it went away, or another worker's answer is slow).
BACKUP_HOLD_EXPIRES_S = 2 * BACKUP_PAUSE_MAX_S
BACKUP_COPY_CALL_S = 3600.0  # the longest a worker's copy of its checkpoints into a backup may take


class WorkerProcess:
    """One running worker as its supervision sees it: what `_Workers` starts, watches and ends.

    The seam between supervising workers and running them: an OS process for `LocalCluster`
    (`SubprocessWorker`), a Ray actor for `RayCluster`. Starting one (`start(worker_id, host,
    port)`, see `_Workers`) launches a worker that runs a `WorkerNode` connecting to the
    supervisor at host:port.
    """

    pid: int | None = None  # None until the worker's hello says (the pid of a Ray actor is known inside it)

    def ended(self) -> str | None:
        """None while the worker runs; else how it ended ("exit code -9"), for the log."""
        raise NotImplementedError

    def kill(self) -> None:
        """End the worker; return once it is gone (the locks on its stores are free)."""
        raise NotImplementedError


class SubprocessWorker(WorkerProcess):
    """A worker as a child process of this one: `python -m headwater.cluster`."""

    def __init__(self, worker_id: int, host: str, port: int) -> None:
        # The workers import what the module's pickled references name (the classes of a test
        # module, say) from where this process found them.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "headwater.cluster", "--supervisor", str(port), "--worker", str(worker_id)],
            env=env, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid

    def ended(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"exit code {code}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class _Worker:
    __slots__ = ("host", "link", "pid", "port", "process", "worker_id")

    def __init__(self, worker_id: int, process: WorkerProcess) -> None:
        self.worker_id = worker_id
        self.process = process
        self.link: Link | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.pid = process.pid or 0  # 0 until its hello says (a Ray actor's)


class _Workers:
    """The worker processes, their links, and their supervision: a worker that dies is started again.

    `start(worker_id, host, port)` launches one worker that connects back to `host`:`port` (this
    supervisor's listener, on `host`): a subprocess by default, a Ray actor for `RayCluster`.
    """

    def __init__(self, count: int, on_frame: Callable[[Link, Any], None], on_lost: Callable[[int], None],
                 on_restart: Callable[[int], None], *,
                 start: Callable[[int, str, int], WorkerProcess] = SubprocessWorker, host: str = "127.0.0.1") -> None:
        self.count = count
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._on_restart = on_restart
        self._start = start
        self.host = host
        self._listener = socket.create_server((host, 0))
        self._lock = threading.Lock()
        self._hello = threading.Condition(self._lock)
        self.workers: list[_Worker] = []
        self.restarting: set[int] = set()  # workers being started again: their tasks are Unavailable
        self.restarts = 0
        self._closing = False
        threading.Thread(target=self._accept, name="headwater-supervisor-accept", daemon=True).start()
        with self._lock:
            self.workers = [self._spawn(i) for i in range(count)]
            self._wait_for_hello(self.workers)
        self._threads = [threading.Thread(target=self._monitor, name="headwater-supervisor", daemon=True)]
        self._threads += [threading.Thread(target=self._heartbeat, args=(worker_id,), daemon=True,
                                           name=f"headwater-heartbeat-{worker_id}") for worker_id in range(count)]
        for thread in self._threads:
            thread.start()

    # ---- starting ----------------------------------------------------------------------------
    def _spawn(self, worker_id: int) -> _Worker:
        port = self._listener.getsockname()[1]
        return _Worker(worker_id, self._start(worker_id, self.host, port))

    def _wait_for_hello(self, starting: list[_Worker]) -> None:
        """Wait (holding the lock) until each of `starting` said hello, or kill them all."""
        deadline = time.monotonic() + WORKER_START_S
        while not all(w.link is not None for w in starting):
            remaining = deadline - time.monotonic()
            dead = [w for w in starting if w.process.ended() is not None]
            if dead or remaining <= 0:
                for worker in starting:
                    self._kill(worker)
                raise Unavailable(
                    f"worker {(dead or starting)[0].worker_id} did not start within {WORKER_START_S}s"
                    f"{' (it ended: ' + str(dead[0].process.ended()) + ')' if dead else ''}; "
                    "see its output above"
                )
            self._hello.wait(min(remaining, 0.1))

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            Link(sock, self._first_frame, "a worker").start()

    def _first_frame(self, link: Link, envelope: Any) -> None:
        if isinstance(envelope, Hello):
            with self._lock:
                if envelope.worker < len(self.workers) and self.workers[envelope.worker].pid in (0, envelope.pid):
                    worker = self.workers[envelope.worker]
                    worker.pid, worker.host, worker.port = envelope.pid, envelope.host, envelope.port
                    link.name = f"worker {envelope.worker} (pid {envelope.pid})"
                    worker.link = link
                    self._hello.notify_all()
            return
        self._on_frame(link, envelope)

    def ports(self) -> dict[int, int]:
        return {w.worker_id: w.port for w in self.workers}

    def hosts(self) -> dict[int, str]:
        """The workers that peers reach elsewhere than on loopback (a RayCluster's on several machines)."""
        return {w.worker_id: w.host for w in self.workers if w.host != "127.0.0.1"}

    def link(self, worker_id: int, *, restarting_ok: bool = False) -> Link:
        if worker_id in self.restarting and not restarting_ok:
            raise Unavailable(f"worker {worker_id} is restarting after it died; retry in a moment")
        link = self.workers[worker_id].link
        if link is None or link.closed:
            raise Unavailable(f"worker {worker_id} is not reachable; it is being restarted, retry in a moment")
        return link

    # ---- supervision -------------------------------------------------------------------------
    def _monitor(self) -> None:
        while not self._closing:
            time.sleep(MONITOR_POLL_S)
            if self._closing:
                return
            # A link closes when its worker is gone, which may be seen before the process is (a Ray
            # node lost); a worker's own link never closes while it runs, since it exits with it.
            for worker in [w for w in self.workers
                           if w.process.ended() is not None or (w.link is not None and w.link.closed)]:
                _log.warning("worker %s (pid %s) died (%s); starting it again", worker.worker_id, worker.pid,
                             worker.process.ended() or "its link closed")
                try:
                    self.restart(worker.worker_id)
                except Exception:  # the supervision goes on: the next look finds what is still dead
                    if self._closing:
                        return
                    _log.exception("starting worker %s again failed; trying again", worker.worker_id)

    def _heartbeat(self, worker_id: int) -> None:
        """Ask the worker to answer every HEARTBEAT_S; one that stays silent WORKER_SILENT_S (stopped,
        stuck, cut off) is killed, so that the monitor restarts it and its tasks fail over."""
        while not self._closing:
            time.sleep(HEARTBEAT_S)
            if self._closing:
                return
            worker = self.workers[worker_id]
            link = worker.link
            if link is None or link.closed or worker_id in self.restarting:
                continue
            try:
                link.call("ping", timeout_s=WORKER_SILENT_S)
            except Unavailable:
                if self._closing or worker is not self.workers[worker_id] or worker.process.ended() is not None:
                    continue
                _log.warning("worker %s (pid %s) did not answer for %ss; killing it", worker_id, worker.pid,
                             WORKER_SILENT_S)
                worker.process.kill()

    def restart(self, worker_id: int) -> None:
        """Start worker `worker_id` again (killing it first if it lives): its tasks recover from disk,
        the other workers learn its new port, and the cluster reopens its modules there. Before that,
        the followers of the tasks it led take over (`on_lost`)."""
        self.restarting.add(worker_id)  # until its modules are open again: its tasks are Unavailable
        try:
            with self._lock:
                if self._closing:
                    return
                self._kill(self.workers[worker_id])
            self._on_lost(worker_id)
            with self._lock:
                if self._closing:
                    return
                self.workers[worker_id] = self._spawn(worker_id)
                self._wait_for_hello([self.workers[worker_id]])
                self.restarts += 1
                port, host = self.workers[worker_id].port, self.workers[worker_id].host
                peers = [w for w in self.workers if w.worker_id != worker_id]
            for peer in peers:  # before any task there sends to it again
                try:
                    self.link(peer.worker_id, restarting_ok=True).call("peer_moved", worker_id, port, host)
                except Unavailable:
                    pass  # dead too: the monitor starts it next, with every port
            self._on_restart(worker_id)
        finally:
            self.restarting.discard(worker_id)

    @staticmethod
    def _kill(worker: _Worker) -> None:
        worker.process.kill()  # returns once it is gone: the locks on its stores are free
        if worker.link is not None:
            worker.link.close()

    def close(self) -> None:
        self._closing = True
        with self._lock:
            for worker in self.workers:  # each worker's rounds are durable when acked; its stores need no flush
                self._kill(worker)
        self._listener.close()
        # The supervision ends before close returns: a heartbeat or a restart still running would
        # touch what the caller tears down next (for a RayCluster, Ray itself).
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(CLOSE_JOIN_S)


class SupervisorTransport(ClientTransport):
    """The transport the clients in the supervisor use: every task is in a worker process."""

    def __init__(self, workers: _Workers, module: str, placement: list[int]) -> None:
        self._workers = workers
        self._module = module
        self._placement = placement
        self._gate = RemoteGate(lambda: self._link(0), module)
        self.closed = False

    def _link(self, task_id: int) -> Link:
        if self.closed:
            raise Unavailable("the cluster is closed")
        return self._workers.link(self._placement[task_id])

    def send(self, task_id: int, message: bytes) -> None:
        check_message(message)
        self._link(task_id).send(ToTask(self._module, task_id, message))

    def submit_append(self, task_id: int, message: bytes, *, caller_waits: bool = False,
                      timeout_s: float = 0.0) -> None:
        self.send(task_id, message)

    def reply(self, client_id: int, message: bytes) -> None:
        raise AssertionError("replies come from the workers")

    def read(self, task_id: int, request: tuple[Any, ...]) -> Any:
        check_may_wait()
        return self._link(task_id).call("read", self._module, task_id, request)

    def consistent_reads(self) -> AbstractContextManager[None]:
        return self._gate.reading()

    def abandon_reads(self, thread_id: int) -> None:
        self._gate.abandon(thread_id)

    def begin_commit(self, task_id: int, wake: bytes) -> bool:
        raise AssertionError("microbatch commits begin on the worker hosting task 0")

    def end_commit(self) -> None:
        raise AssertionError("microbatch commits end on the worker hosting task 0")

    def congested(self) -> bool:
        return False


class WorkerDeployment(DeploymentBase):
    """One module running on the workers, seen from the supervisor: what the client classes use."""

    def __init__(self, workers: _Workers, module: Module, catalog: Catalog, directory: Path, client_id: int,
                 peers: Any = None) -> None:
        self.directory = directory
        self.peers = peers  # the cluster's clients: what the module's unrouted queries' mirrors read through
        self.router = ReplyRouter()
        self.client_id = client_id
        self.closed = False
        self._workers = workers
        self._watches = RemoteWatches(self)
        self._open(module, catalog)

    def watch(self, task: int, pstate: str, steps: tuple, callback: Any, label: str, *, on_commit: Any = None) -> Any:
        """A subscription here to a path of `task`, whose worker sends it each commit's diffs."""
        self.check_open()
        return self._watches.watch(task, pstate, steps, callback, label, on_commit)

    def on_watch_diffs(self, envelope: WatchDiffs) -> None:
        self._watches.received(envelope)

    def watch_on(self, task: int, pstate: str, steps: tuple, watch_id: int) -> Any:
        """Have the worker leading `task` send the diffs of a path to watch `watch_id` here; its value."""
        return self._workers.link(self.placement[task]).call("watch", self.runtime.name, task, pstate, steps,
                                                             watch_id, None)

    def unwatch_on(self, task: int, watch_id: int) -> None:
        try:
            self._workers.link(self.placement[task]).call("unwatch", self.runtime.name, watch_id)
        except Unavailable:
            pass  # the worker is gone, and the watch with it

    def _open(self, module: Module, catalog: Catalog) -> None:
        try:
            module_bytes = _dumps(_by_value_where_needed(module))
        except Exception as e:
            raise DefinitionError(
                f"module {module.name!r} cannot be sent to the worker processes: {type(e).__name__}: {e}. Its "
                "handlers may close over objects of this process (locks, open files, clients); create those "
                "inside the handler, or use InProcessCluster"
            ) from None
        self.runtime = ModuleRuntime(module, catalog)
        self._module, self._catalog = module, catalog
        # A task's copies start on consecutive workers from its leader's, so no two on one worker.
        self.sets = _ReplicaSets(self.directory, catalog.tasks, catalog.replication, self._workers.count)
        placement = self.sets.leaders()
        self.placement = placement  # shared with the transport: a failover moves a task in both
        transport = SupervisorTransport(self._workers, module.name, placement)
        transport.peers = self.peers
        self.failures = {}
        self._module_bytes = module_bytes
        # Every worker opens the module, those that lead none of its tasks too: their clients (a front,
        # another module's mirrors) reach its tasks from there.
        self._open_on(list(range(self._workers.count)), deploying=True)
        # Published only now: a client that sent on it earlier would reach workers where the module
        # is not open yet, which drop the message, and wait out its timeout; until now, a client
        # meets the stopped transport of the previous version and gets Unavailable at once.
        self.transport = transport
        self._watches.again(None)  # the module's new tasks have no watches yet

    def _open_on(self, workers: list[int], *, deploying: bool = False) -> None:
        """Open the module's tasks on `workers`, then start them. `deploying`: a task whose resource
        factory raises fails the call and stops the module everywhere (after a restart the task
        retries instead, and status() shows why it waits)."""
        # Each leader opened here begins a new term: a follower then refuses what an earlier one sends.
        sets = self.sets.begin([task for task, leader in enumerate(self.placement) if leader in workers])
        for worker in workers:  # every task's inbox exists before any task starts sending
            try:
                resource_errors = self._workers.link(worker, restarting_ok=True).call(
                    "open", self._module_bytes, self._catalog, str(self.directory), sets,
                    self._workers.ports(), self.runtime.writers.found, self._workers.hosts(), timeout_s=DEPLOY_CALL_S)
            except (ImportError, AttributeError) as e:
                raise DefinitionError(
                    f"the worker processes cannot load module {self._module.name!r}: {e}. Define what it uses in "
                    "a file the workers can import (they see this process's sys.path), or in the script that runs"
                ) from None
            if deploying and resource_errors:
                task, (resource, error) = min(resource_errors.items())
                self._stop_tasks(f"module {self._module.name!r} did not start: {error}")
                raise ResourceError(error, resource=resource, task=task)
        for worker in workers:
            self._workers.link(worker, restarting_ok=True).call("start", self._module.name)

    def reopen(self, worker: int) -> None:
        """After worker `worker` restarted: open the module's tasks there again (they recover from
        disk), then have every other task send again what was in flight, to it or from it."""
        moved = {task for task, where in enumerate(self.placement) if where == worker}
        for task in moved:  # an internal error it stopped on stopped with its process
            self.failures.pop(task, None)
        self.router.fail_tasks(moved, f"worker {worker}, which hosts this task of module {self.runtime.name!r}, "
                                      "restarted before the reply came; the event may be durable: append again "
                                      "with the same idempotency_key to be sure")
        self._open_on([worker])
        if moved:  # else it holds followers only: they catch up from their leaders by themselves
            self._redrive(moved, f"task(s) {sorted(moved)} restarted on worker {worker}")
            self._watches.again(moved)

    def fail_over(self, lost: int) -> float | None:
        """Worker `lost` is gone: an in-sync follower takes over each task it led (a new epoch), the
        other workers and this process send to it from now on, and the other tasks redrive. Tasks
        with no follower in sync wait for `lost` to come back (`reopen`). Returns the seconds it took,
        or None if no task moved."""
        started = time.monotonic()
        moved: list[int] = []
        for task, leader in enumerate(self.placement):
            if leader != lost:
                continue
            replica_set = self.sets.fail_over(task, lost)
            if replica_set is None:
                continue
            new_leader = replica_set[1][0]
            try:
                self._workers.link(new_leader).call("promote", self.runtime.name, task, replica_set,
                                                    timeout_s=DEPLOY_CALL_S)
            except Unavailable:
                _log.exception("task %d of %s: the follower on worker %d could not take over", task,
                               self.runtime.name, new_leader)
                continue  # recorded as leader: its worker's restart opens the task there
            finally:
                self.placement[task] = new_leader
            for worker in range(self._workers.count):
                if worker not in (lost, new_leader):
                    try:
                        self._workers.link(worker).call("moved", self.runtime.name, task, new_leader)
                    except Unavailable:
                        pass  # down too: it learns the placement when it opens again
            moved.append(task)
            _log.warning("task %d of %s: worker %d took over from worker %d (epoch %d)", task, self.runtime.name,
                         new_leader, lost, replica_set[0])
        if moved:
            self.router.fail_tasks(set(moved), f"the worker leading this task of module {self.runtime.name!r} was "
                                                "lost and another copy took over before the reply came; the event "
                                                "may be durable: append again with the same idempotency_key")
            self._redrive(set(moved), f"task(s) {moved} moved from worker {lost}")
            self._watches.again(set(moved))
        return time.monotonic() - started if moved else None

    def record_in_sync(self, task: int, epoch: int, in_sync: list[int]) -> bool:
        return self.sets.record_in_sync(task, epoch, in_sync)

    def _redrive(self, moved: set[int], reason: str) -> None:
        """Every task sends again what may have been lost in flight: the others' messages to the
        moved tasks, and the moved tasks' own (their recovery sent them while another moved task
        may still have been placed on the lost worker)."""
        redrive = messages.encode(Redrive(reason))
        for task in range(len(self.placement)):
            try:
                self.transport.send(task, redrive)
            except Unavailable:
                pass  # its worker is down as well: its own restart redrives the rest

    def followers(self) -> dict[int, list[dict[str, Any]]]:
        if self._catalog.replication == 1:
            return {}
        found: dict[int, list[dict[str, Any]]] = {}
        for worker in sorted(set(self.placement)):
            try:
                found.update(self._workers.link(worker).call("replication", self.runtime.name,
                                                             timeout_s=STATUS_CALL_S))
            except Unavailable:
                pass  # its tasks show as not up
        return found

    def where(self, task: int) -> tuple[int | None, int]:
        worker = self.placement[task]
        return worker, self._workers.workers[worker].pid

    def stop(self) -> None:
        super().stop()
        self._watches.close()

    def _stop_tasks(self, reason: str) -> None:
        transport = getattr(self, "transport", None)  # none yet when a first deploy fails to start
        if transport is not None:
            transport.closed = True
        for worker in range(self._workers.count):
            try:
                self._workers.link(worker).call("stop", self.runtime.name)
            except Unavailable:
                pass  # a worker that is gone holds nothing
        self.router.fail_all(reason)


class _ReplicaSets:
    """The controller's record of a module's replication: per task its epoch, its replicas (the
    leader first) and its in-sync followers, in `replication.json` beside the module's data.

    Only the controller changes it: an epoch grows each time a leader is opened or another
    replica takes over, and the in-sync set changes when the task's current leader asks (with
    its epoch, so a deposed leader's request is refused). It is written (and synced) before
    anyone acts on a change, so a restarted supervisor resumes from it."""

    def __init__(self, directory: Path, tasks: int, replication: int, workers: int) -> None:
        self._path = directory / "replication.json"
        self._lock = threading.Lock()
        if self._path.exists():
            self._sets = [(epoch, list(replicas), list(in_sync))
                          for epoch, replicas, in_sync in json.loads(self._path.read_text())]
        else:  # first deploy: every copy is empty, so every follower is in sync
            self._sets = []
            for task in range(tasks):
                replicas = [(task + k) % workers for k in range(replication)]
                self._sets.append((0, replicas, replicas[1:]))
        beyond = sorted({w for _, replicas, _ in self._sets for w in replicas if w >= workers})
        if len(self._sets) != tasks or beyond:
            raise DefinitionError(
                f"the replicas recorded in {str(self._path)!r} are on worker(s) {beyond} of a cluster with "
                f"{workers} workers; open the data with at least {max(beyond, default=0) + 1} workers")

    def all(self) -> list[ReplicaSet]:
        with self._lock:
            return list(self._sets)

    def leaders(self) -> list[int]:
        with self._lock:
            return [replicas[0] for _, replicas, _ in self._sets]

    def begin(self, tasks: list[int]) -> list[ReplicaSet]:
        """A new term for each of `tasks`, whose leaders are being opened."""
        with self._lock:
            for task in tasks:
                epoch, replicas, in_sync = self._sets[task]
                self._sets[task] = (epoch + 1, replicas, in_sync)
            self._save()
            return list(self._sets)

    def record_in_sync(self, task: int, epoch: int, in_sync: list[int]) -> bool:
        with self._lock:
            current, replicas, _ = self._sets[task]
            if epoch != current or not set(in_sync) <= set(replicas[1:]):
                return False  # from a leader deposed meanwhile
            self._sets[task] = (current, replicas, sorted(in_sync))
            self._save()
            return True

    def fail_over(self, task: int, lost: int) -> ReplicaSet | None:
        """Let an in-sync follower lead `task` instead of worker `lost`, under a new epoch; None if
        none is in sync (the task waits for its leader's worker to come back)."""
        with self._lock:
            epoch, replicas, in_sync = self._sets[task]
            candidates = [w for w in in_sync if w != lost]
            if replicas[0] != lost or not candidates:
                return None
            leader = candidates[0]
            replicas = [leader, *[w for w in replicas if w not in (leader, lost)], lost]
            self._sets[task] = (epoch + 1, replicas, [w for w in in_sync if w not in (leader, lost)])
            self._save()
            return self._sets[task]

    def _save(self) -> None:
        temporary = self._path.with_suffix(".tmp")
        with open(temporary, "w") as file:
            json.dump(self._sets, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._path)


class _ModulePickler(cloudpickle.Pickler):
    """cloudpickle, keeping code objects' file names, and minus what msgspec caches on a class it has
    seen: a class sent by value (a notebook's, a script's) must arrive as defined, or msgspec refuses it."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, msgspec.Meta):  # constraints in an event type's annotations (Annotated[int, Meta(ge=0)])
            return _meta, ({name: getattr(obj, name) for name in _META_FIELDS if getattr(obj, name) is not None},)
        if isinstance(obj, types.CodeType):
            # marshal keeps the file name and line numbers (cloudpickle would write "<dynamic-code>"),
            # so a handler's traceback from a worker shows its file and source lines; every process
            # of a cluster runs the same Python, which is all marshal asks.
            return marshal.loads, (marshal.dumps(obj),)
        reduced = super().reducer_override(obj)
        if isinstance(obj, type) and isinstance(reduced, tuple) and len(reduced) > 2 and isinstance(reduced[2], tuple):
            class_dict, slot_state = reduced[2]
            if "__msgspec_cache__" in class_dict:
                class_dict = {k: v for k, v in class_dict.items() if k != "__msgspec_cache__"}
                reduced = (*reduced[:2], (class_dict, slot_state), *reduced[3:])
        return reduced


_META_FIELDS = ("gt", "ge", "lt", "le", "multiple_of", "pattern", "min_length", "max_length", "tz", "title",
                "description", "examples", "extra_json_schema", "extra")


def _meta(fields: dict[str, Any]) -> msgspec.Meta:
    return msgspec.Meta(**fields)


def _dumps(module: Module) -> bytes:
    buffer = io.BytesIO()
    _ModulePickler(buffer).dump(module)
    return buffer.getvalue()


def _by_value_where_needed(module: Module) -> Module:
    """Let cloudpickle send by value the code of `module` that the workers could not import by
    name: a notebook cell or a documentation page (no file), or an app file loaded from its path
    under a name of its own (`headwater serve app.py`)."""
    functions = [decl.fn for table in (module.streams, module.microbatches, module.steps, module.queries)
                 for decl in table.values()]
    types = [decl.event_type for decl in module.depots.values()]
    for name in {getattr(thing, "__module__", None) for thing in (*functions, *types)}:
        found = sys.modules.get(name or "")
        if found is not None and name not in ("__main__", *sys.builtin_module_names) and not _importable(name or ""):
            cloudpickle.register_pickle_by_value(found)
            _resolve_annotations(found)
    return module


def _resolve_annotations(module: types.ModuleType) -> None:
    """Replace string annotations (`from __future__ import annotations`) of the classes defined in
    `module` by the types they name. A class sent by value arrives in a worker without its
    module, where msgspec could not resolve `"uuid.UUID"` against the module's globals."""
    for value in list(vars(module).values()):
        if not isinstance(value, type) or value.__module__ != module.__name__:
            continue
        own = inspect.get_annotations(value)
        if not any(isinstance(kind, str) for kind in own.values()):
            continue
        try:
            hints = typing.get_type_hints(value, include_extras=True)
        except Exception:  # left as it is: decoding reports what is wrong, as it would in process
            continue
        value.__annotations__ = {name: hints.get(name, kind) for name, kind in own.items()}


def _importable(name: str) -> bool:
    """The workers, which search this process's sys.path, would find `name`'s top-level package."""
    top = name.partition(".")[0]
    return top in sys.builtin_module_names or importlib.machinery.PathFinder.find_spec(top, sys.path) is not None


class LocalCluster(InProcessCluster):
    """A cluster of `workers` processes on this machine (default: one per core), data under `path`.

    The same interface as `InProcessCluster`: deploy, update, destroy, depot, pstate, query,
    dead letters, microbatch helpers; task i runs on worker i mod `workers` (1 to 64, else
    `ValueError`), and the clients stay in this process. `path` defaults to `"data"`, which
    stays after `close()`; `path=None` is a temporary directory, as for `InProcessCluster`.
    A module travels to the workers by value (cloudpickle): its handlers may not close over
    objects of the deploying process such as locks or clients (`deploy` raises
    `DefinitionError`). If a worker dies, it restarts and its tasks recover from disk; calls
    to them meanwhile raise `Unavailable`.

        with hw.LocalCluster(path="data-local", workers=2) as cluster:
            cluster.deploy(bank, tasks=4)
            cluster.depot("bank", "deposits").append(Deposit(2, 70))["deposit"]   # 70
    """

    def __init__(self, path: str | os.PathLike[str] | None = "data", *, workers: int | None = None) -> None:
        count = workers if workers is not None else min(os.cpu_count() or 1, WORKERS_MAX)
        if not isinstance(count, int) or not 1 <= count <= WORKERS_MAX:
            raise ValueError(f"workers={workers!r} must be an int from 1 to {WORKERS_MAX}")
        super().__init__(path)
        self._client_ids = iter(range(1, 1 << CLIENT_PROCESS_SHIFT))
        self._fronts: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._front_info: dict[int, dict[str, Any]] = {}  # worker -> what its fronts said of themselves
        self._calls = concurrent.futures.ThreadPoolExecutor(SUPERVISOR_CALL_THREADS,
                                                            thread_name_prefix="headwater-supervisor-call")
        self._workers = self._spawn_workers(count)
        # Seconds each failover took (a module's tasks moving off a lost worker), the latest FAILOVERS_KEPT.
        self.failovers: collections.deque[float] = collections.deque(maxlen=FAILOVERS_KEPT)

    def _spawn_workers(self, count: int, **options: Any) -> _Workers:
        """Start the workers and their supervision: subprocesses here (RayCluster: Ray actors)."""
        return _Workers(count, self._on_frame, self._fail_over, self._reopen, **options)

    def __repr__(self) -> str:
        return f"<LocalCluster {str(self.path)!r} workers={self._workers.count} modules={sorted(self._deployments)}>"

    def _replication_max(self) -> int:
        return self._workers.count

    def _start(self, module: Module, tasks: int | None, replication: int | None,
               delete: Sequence[str]) -> WorkerDeployment:
        return WorkerDeployment(self._workers, module, self._catalog(module, tasks, replication, delete),
                                self.path / module.name, next(self._client_ids), self)

    def _on_frame(self, link: Link, envelope: Any) -> None:
        if isinstance(envelope, Call):  # from a worker's front: status() is known here
            ops: dict[str, Callable[..., Any]] = {"status": self.status, "in_sync": self._record_in_sync,
                                                  "apply_app": self._apply_app_from_front,
                                                  "backup": self._backup_from_front}
            self._calls.submit(link.answer, envelope, ops.get(envelope.op) or self._unknown_call)
            return
        deployment = self._deployments.get(getattr(envelope, "module", ""))
        if deployment is None:
            return  # a module stopped meanwhile
        if isinstance(envelope, ToClient):
            deployment.router.deliver(envelope.message)
        elif isinstance(envelope, Failed):
            assert isinstance(deployment, WorkerDeployment)
            deployment.failures[envelope.task] = envelope.error
        elif isinstance(envelope, WatchDiffs):
            assert isinstance(deployment, WorkerDeployment)
            deployment.on_watch_diffs(envelope)

    def _apply_app_from_front(self, source: bytes | str, filename: str, delete: list[str], dry_run: bool,
                              tasks: int) -> list[dict[str, Any]]:
        return self.apply_app(source, filename=filename, delete=delete, dry_run=dry_run, tasks=tasks)

    def _backup_from_front(self, destination: str, keep: int | None = None) -> dict[str, Any]:
        return self.backup(destination, keep=keep).to_json()

    def _front_of(self, worker: int | None) -> dict[str, Any]:
        return self._front_info.get(worker, {}) if worker is not None else {}

    @staticmethod
    def _unknown_call(*_: Any) -> None:
        raise NotFound("supervisor call", "?", ["status"])

    def _record_in_sync(self, module: str, task: int, epoch: int, in_sync: list[int]) -> bool:
        deployment = self._deployments.get(module)
        return isinstance(deployment, WorkerDeployment) and deployment.record_in_sync(task, epoch, in_sync)

    def _fail_over(self, worker: int) -> None:
        with self._lock:
            for deployment in self._deployments.values():
                assert isinstance(deployment, WorkerDeployment)
                try:
                    took = deployment.fail_over(worker)
                    if took is not None:
                        self.failovers.append(took)
                except Exception:  # its tasks wait for the worker's restart instead
                    _log.exception("module %s did not fail over from worker %s", deployment.runtime.name, worker)

    def _reopen(self, worker: int) -> None:
        with self._lock:
            for deployment in self._deployments.values():
                assert isinstance(deployment, WorkerDeployment)
                try:
                    deployment.reopen(worker)
                except Exception:  # the next restart (or a client's Unavailable) tells the story
                    _log.exception("module %s did not reopen after worker %s restarted", deployment.runtime.name,
                                   worker)
            for factory, args in self._fronts:  # the restarted worker serves again
                try:
                    self._start_front(factory, args, [worker])
                except Exception:  # the next restart (or the fronts' clients) tells the story
                    _log.exception("a front did not start again after worker %s restarted", worker)

    # ---- backups: every worker holds its tasks, then each checkpoints and copies them itself -----
    def _back_up(self, staging: Path, destination: Path) -> tuple[dict[str, Any], dict[Hashable, CopiedFiles], float]:
        backup_id = staging.name
        with self._lock:
            self._check_open()
            records = {name: module_record(d.directory) for name, d in self._deployments.items()}
            names = sorted(records)
            workers = list(range(self._workers.count))
            self._on_workers(workers, "backup_flush", names)  # before the cut: each checkpoint then flushes little
            for _ in range(BACKUP_ATTEMPTS_MAX):
                held = self._on_workers(workers, "backup_hold", backup_id, names, BACKUP_PAUSE_MAX_S,
                                        BACKUP_HOLD_EXPIRES_S, failed=None)
                if all(keys is not None for keys in held.values()):
                    break
                self._on_workers(workers, "backup_release", backup_id, failed=None)
            else:
                raise Unavailable(f"a backup could not hold every task between rounds within {BACKUP_PAUSE_MAX_S}s, "
                                  f"{BACKUP_ATTEMPTS_MAX} times (long rounds, or a worker restarting); try again")
            # Every task is held now: the cut. Each worker checkpoints its own and lets them go.
            try:
                stalls = self._on_workers(workers, "backup_checkpoint", backup_id, str(staging))
            except BaseException:
                self._on_workers(workers, "backup_release", backup_id, failed=None)
                raise
        copied: dict[Hashable, CopiedFiles] = {}
        for part in self._on_workers(workers, "backup_copy", backup_id, str(destination),
                                     timeout_s=BACKUP_COPY_CALL_S).values():
            copied.update(part)
        return records, copied, max((s for part in stalls.values() for s in part.values()), default=0.0)

    _RAISE: Any = object()

    def _on_workers(self, workers: list[int], op: str, *args: Any, timeout_s: float = DEPLOY_CALL_S,
                    failed: Any = _RAISE) -> dict[int, Any]:
        """Call `op` on every worker at once; their answers. A worker that fails raises, or answers `failed`."""
        def call(worker: int) -> Any:
            try:
                return self._workers.link(worker).call(op, *args, timeout_s=timeout_s)
            except Unavailable:
                if failed is self._RAISE:
                    raise
                return failed

        with concurrent.futures.ThreadPoolExecutor(len(workers), thread_name_prefix="headwater-backup") as pool:
            futures = {worker: pool.submit(call, worker) for worker in workers}
            return {worker: future.result() for worker, future in futures.items()}

    # ---- fronts: what every worker serves besides its tasks (the HTTP API) ----------------
    def start_fronts(self, factory: Callable[..., Any], *args: Any) -> None:
        """Run `factory(worker_cluster, *args)` in every worker, now and after every restart.

        `worker_cluster` is that worker's `WorkerCluster` (the client half of a cluster, over the
        modules it hosts); `factory` travels pickled by reference, so it must be a top-level
        function, and what it returns must have `stop()`. `headwater serve --workers N` starts
        an HTTP server in every worker this way, all on one port.
        """
        with self._lock:
            self._check_open()
            self._fronts.append((factory, args))
            restarts = self._workers.restarts
            try:
                self._start_front(factory, args, range(self._workers.count))
            except Unavailable:
                if self._workers.restarts == restarts and not self._workers.restarting:
                    raise
                # A worker died meanwhile: its restart, which waits for this lock, starts its fronts.

    def _start_front(self, factory: Callable[..., Any], args: tuple[Any, ...], workers: Iterable[int]) -> None:
        for worker in workers:
            info = self._workers.link(worker, restarting_ok=True).call("front", factory, *args, timeout_s=FRONT_CALL_S)
            self._front_info.setdefault(worker, {}).update(info)

    def stop_fronts(self) -> None:
        """Stop every worker's fronts (each lets the requests it is serving finish first)."""
        with self._lock:
            self._fronts.clear()
            self._front_info.clear()
        def stop(worker: int) -> None:
            try:
                self._workers.link(worker).call("stop_fronts", timeout_s=FRONT_CALL_S)
            except Unavailable:
                pass  # a worker that is gone serves nothing

        stopping = [threading.Thread(target=stop, args=(worker,)) for worker in range(self._workers.count)]
        for thread in stopping:  # all at once: each may wait for its slowest request
            thread.start()
        for thread in stopping:
            thread.join()

    def close(self) -> None:
        """Stop every module's tasks, then end the worker processes; as `InProcessCluster.close`.

        What the workers acknowledged is already on disk, so ending them loses nothing; a
        cluster over the same `path` resumes from it.
        """
        if self._fronts:
            self.stop_fronts()
        super().close()
        self._workers.close()
        self._calls.shutdown(wait=False, cancel_futures=True)

