"""A worker process of a `LocalCluster`: it hosts a group of tasks, each with its own RocksDB.

    python -m headwater.cluster --supervisor PORT --worker ID

The worker connects to its supervisor, says hello with the port its peers reach it on, and then
does what the supervisor asks: `open` a module's tasks (stores, recovery, inboxes), `start` them,
serve reads, hold microbatch commits off for queries, `stop`, and run `front`s (the HTTP server)
over a `WorkerCluster`, the client half of a cluster in this process. Messages between tasks go
straight from worker to worker; a reply goes to the process holding its client (the supervisor,
this worker, or a peer). The worker exits when its supervisor goes away, so no worker outlives
its cluster.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import faulthandler
import functools
import itertools
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from headwater.client.cluster import BackupInfo, ModuleInfo
from headwater.client.replies import ReplyRouter
from headwater.client.seam import ClientTransport, DeployedModule, check_may_wait
from headwater.client.subscriptions import Subscription
from headwater.cluster.backups import CopiedFiles, TaskPause, copy_checkpoint, task_key_directory
from headwater.cluster.clients import ClusterClients
from headwater.cluster.hosts import SYSTEM_CLOCK, TaskThread, stop_hosts
from headwater.cluster.replication import (
    REPLICATION_FRAMES,
    HeldTransport,
    Leader,
    Replica,
    ReplicaAck,
    ReplicaFenced,
    ReplicaHello,
    ReplicaSet,
    task_directory,
)
from headwater.cluster.transport import COMMIT_WAIT_MAX_S, INBOX_BYTES_MAX, Inbox, _CommitGate
from headwater.cluster.watching import Hub, RemoteWatches, WatchedStore
from headwater.cluster.wire import (
    CLIENT_PROCESS_SHIFT,
    Call,
    Failed,
    Hello,
    Link,
    ToClient,
    ToTask,
    WatchDiffs,
    client_process,
    connect,
    dumps,
)
from headwater.engine.definitions import Module
from headwater.engine.runtime import Catalog, ModuleRuntime
from headwater.engine.task import Task
from headwater.engine.transport import Transport, check_message
from headwater.errors import NotFound, Unavailable
from headwater.schema import Map
from headwater.storage import RocksStore, Store

__all__ = ["WORKER_CALL_THREADS", "RemoteGate", "WorkerCluster", "WorkerNode", "main"]

_log = logging.getLogger("headwater.worker")

WORKER_CALL_THREADS = 32  # calls a worker serves at once (reads, queries, holds); more wait their turn
_POINT_READ_OPS = frozenset({"exists", "size", "contains"})  # answers bounded whatever the data
STATUS_CALL_S = 10.0  # the longest a worker's front waits for the supervisor's status()
BACKUP_CALL_S = 3600.0  # the longest a worker's front waits for the supervisor to take a backup
APPLY_APP_CALL_S = 120.0  # the longest a worker's front waits for the supervisor to apply an app update
REPLICATION_CHECK_S = 0.2  # how often a worker looks for followers that stopped confirming
PROPOSE_CALL_S = 2.0  # the longest a leader waits for the controller to record a new in-sync set
_tokens = itertools.count(1)
_endpoints = itertools.count(1)


class RemoteGate:
    """A query's hold on the commit gate of the worker hosting task 0, from another process.

    Reentrant per thread like the gate itself (a query that calls a query holds once), and a
    query given up by its caller (`abandon`) lets go at once.
    """

    def __init__(self, link: Callable[[], Link], module: str) -> None:
        self._link = link
        self._module = module
        self._lock = threading.Lock()
        self._held: dict[int, list[Any]] = {}  # thread id -> [depth, token]

    @contextmanager
    def reading(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._lock:
            held = self._held.get(me)
            if held is not None:
                held[0] += 1
        if held is None:
            token = (os.getpid(), next(_tokens))
            self._link().call("hold", self._module, token, timeout_s=COMMIT_WAIT_MAX_S + 5)
            with self._lock:
                self._held[me] = [1, token]
        try:
            yield
        finally:
            with self._lock:
                held = self._held.get(me)
                if held is not None:
                    held[0] -= 1
                    if held[0] == 0:
                        del self._held[me]
                    else:
                        held = None  # an outer frame of this thread still holds it
            if held is not None:
                self._release(held[1])

    def abandon(self, thread_id: int) -> None:
        with self._lock:
            held = self._held.pop(thread_id, None)
        if held is not None:
            self._release(held[1])

    def _release(self, token: Hashable) -> None:
        try:
            self._link().call("release", self._module, token)
        except Unavailable:
            pass  # the worker is gone, and its holds with it


class WorkerTransport(ClientTransport):
    """The transport inside a worker, for its tasks and for its clients (the HTTP server's): local
    inboxes, links to peers, and replies to whichever process holds the client."""

    def __init__(self, node: WorkerNode, module: str, placement: list[int]) -> None:
        self._node = node
        self._module = module
        self._placement = placement  # task id -> the worker hosting it
        self._inboxes: dict[int, Inbox] = {}
        self._readers: dict[int, Callable[[tuple[Any, ...]], Any]] = {}
        self._rounds: dict[int, Callable[[float], None]] = {}
        self.router = ReplyRouter()  # the replies for this worker's clients of the module
        self.closed = False
        self.gate = _CommitGate(self.send) if placement[0] == node.worker_id else None
        self._remote_gate = None if self.gate else RemoteGate(lambda: node.peer(self._placement[0]), module)
        self._batch = threading.local()  # per round thread: frames held until the round ends

    @contextmanager
    def batching(self) -> Iterator[None]:
        """Hold what the running round sends to other processes, then send it in one write per link."""
        pending: dict[Link, list[bytes]] = {}
        self._batch.frames = pending
        try:
            yield
        finally:
            self._batch.frames = None
            for link, frames in pending.items():
                _send_or_drop(link, frames)

    def flush(self) -> None:
        pending = getattr(self._batch, "frames", None)
        if pending:
            for link, frames in pending.items():
                _send_or_drop(link, frames)
            pending.clear()

    def post(self, worker: int | None, envelope: Any) -> None:
        """Send `envelope` to the supervisor (None) or a peer worker (dropped if it is down)."""
        self._post(worker, envelope)

    def _post(self, worker: int | None, envelope: Any) -> None:
        """Send `envelope` to the supervisor (None) or a peer worker, or hold it for the round's write.

        A message to a worker that is down is dropped: when it is back, the supervisor has every
        task send again what was in flight (`Redrive`), and its clients here were told to retry."""
        try:
            link = self._node.supervisor if worker is None else self._node.peer(worker)
        except Unavailable as e:
            _log.info("dropped a message for worker %s of module %s: %s", worker, self._module, e)
            return
        pending = getattr(self._batch, "frames", None)
        if pending is None:
            _send_or_drop(link, [Link.encode(envelope)])
        else:
            pending.setdefault(link, []).append(Link.encode(envelope))

    def add_task(self, task_id: int, read: Callable[[tuple[Any, ...]], Any]) -> Inbox:
        inbox = self._inboxes[task_id] = Inbox()
        self._readers[task_id] = read
        return inbox

    def add_host(self, task_id: int, run_round_here: Callable[[float], None]) -> None:
        self._rounds[task_id] = run_round_here

    def remove_task(self, task_id: int) -> None:
        self._inboxes.pop(task_id, None)
        self._readers.pop(task_id, None)
        self._rounds.pop(task_id, None)

    def placement_of(self, task_id: int) -> int:
        """The worker leading `task_id`."""
        return self._placement[task_id]

    def tasks_on(self, worker: int) -> set[int]:
        return {task for task, where in enumerate(self._placement) if where == worker}

    def move(self, task_id: int, worker: int) -> None:
        """Task `task_id` is led by `worker` from now on (a failover): messages and reads go there."""
        self._placement[task_id] = worker
        if task_id == 0:  # the commit gate of consistent reads lives with task 0, the coordinator
            here = worker == self._node.worker_id
            if here and self.gate is None:
                self.gate = _CommitGate(self.send)
            elif not here:
                self.gate = None
            if self._remote_gate is None:
                self._remote_gate = RemoteGate(lambda: self._node.peer(self._placement[0]), self._module)

    def deliver(self, task_id: int, message: bytes) -> None:
        inbox = self._inboxes.get(task_id)
        if inbox is not None:  # else the task moved away (a failover): what was lost is redriven
            inbox.put(message)

    def send(self, task_id: int, message: bytes) -> None:
        check_message(message)
        inbox = self._inboxes.get(task_id)
        if inbox is not None:
            inbox.put(message)
        else:
            self._post(self._placement[task_id], ToTask(self._module, task_id, message))

    def submit_append(self, task_id: int, message: bytes, *, caller_waits: bool = False,
                      timeout_s: float = 0.0) -> None:
        check_message(message)
        if self.closed:
            raise Unavailable(f"module {self._module!r} stopped on worker {self._node.worker_id}")
        inbox = self._inboxes.get(task_id)
        if inbox is not None and caller_waits:  # a client here and its task too: as in process
            inbox.put(message, wake=False)
            self._rounds[task_id](timeout_s)
        elif inbox is not None:
            inbox.put(message)
        else:  # a client hears at once that the task's worker is down (a task's message would be dropped)
            self._node.peer(self._placement[task_id]).send(ToTask(self._module, task_id, message))

    def abandon_reads(self, thread_id: int) -> None:
        if self.gate is not None:
            self.gate.abandon(thread_id)
        else:
            assert self._remote_gate is not None
            self._remote_gate.abandon(thread_id)

    def reply(self, client_id: int, message: bytes) -> None:
        worker = client_process(client_id)
        if worker == self._node.worker_id:
            self.router.deliver(message)
        else:
            self._post(worker, ToClient(self._module, client_id, message))

    def read(self, task_id: int, request: tuple[Any, ...]) -> Any:
        read = self._readers.get(task_id)
        if read is not None:
            return read(request)
        check_may_wait()  # an event loop must not wait for a peer: it reads this on a thread instead
        return self._node.peer(self._placement[task_id]).call("read", self._module, task_id, request)

    def consistent_reads(self) -> AbstractContextManager[None]:
        if self.gate is not None:
            return self.gate.reading()
        assert self._remote_gate is not None
        return self._remote_gate.reading()

    def begin_commit(self, task_id: int, wake: bytes) -> bool:
        assert self.gate is not None, "microbatch commits begin on the worker hosting task 0"
        return self.gate.begin_commit(task_id, wake)

    def end_commit(self) -> None:
        assert self.gate is not None
        self.gate.end_commit()

    def congested(self) -> bool:
        # The inboxes of this worker only: a peer's fill is not known here (it bounds its own).
        return any(inbox.queued_bytes > INBOX_BYTES_MAX for inbox in self._inboxes.values())


def _send_or_drop(link: Link, frames: list[bytes]) -> None:
    try:
        link.send_frames(frames)
    except Unavailable as e:  # the process at the other end died: see WorkerTransport._post
        _log.info("dropped %d message(s): %s", len(frames), e)


class _Deployment(DeployedModule):
    """One module on this worker: the tasks it hosts, and the client endpoint of its clients here."""

    transport: WorkerTransport

    def __init__(self, node: WorkerNode, module: Module, catalog: Catalog, directory: Path,
                 sets: list[ReplicaSet], writer_kinds: dict[str, str]) -> None:
        placement = [replicas[0] for _, replicas, _ in sets]  # the first of a task's replicas leads it
        self.runtime = ModuleRuntime(module, catalog, writer_kinds=writer_kinds)
        self.transport = WorkerTransport(node, module.name, placement)
        self.transport.peers = node.cluster  # the clients of this worker: what the module's mirrors read through
        self.router = self.transport.router
        self.client_id = ((node.worker_id + 1) << CLIENT_PROCESS_SHIFT) | next(_endpoints)
        self.closed = False
        self.failures = {}
        self._node = node
        self._directory = directory
        self.hosts: dict[int, TaskThread] = {}
        self.stores: dict[int, RocksStore] = {}  # the RocksDB of each task led here (what a backup copies)
        self.leaders: dict[int, Leader] = {}
        self.replicas: dict[int, Replica] = {}
        self.hub = Hub(self)  # subscriptions to the paths of the tasks led here, for any process
        self._forwarders: dict[int, _Forwarder] = {}  # watch id -> where its diffs go
        self.remote_watches = RemoteWatches(self)  # this worker's clients' watches of tasks led elsewhere
        me = node.worker_id
        for task_id, (_, replicas, _) in enumerate(sets):
            if me in replicas[1:]:
                self.replicas[task_id] = Replica(module.name, task_id, me, replicas[0],
                                                 task_directory(directory, task_id, me, len(replicas)),
                                                 node.send_replication)
        for task_id, replica_set in enumerate(sets):
            if replica_set[1][0] == me:
                self._lead(task_id, replica_set)
        # Built before any task starts; a task whose factory raised retries once started (after a
        # restart), while a deploy that hears of it stops the module (`open` answers with them).
        self.resource_errors = {task_id: (error.resource, str(error)) for task_id, host in self.hosts.items()
                                if (error := host.open_resources()) is not None}

    def _lead(self, task_id: int, replica_set: ReplicaSet) -> TaskThread:
        """Host task `task_id` here, as its leader when it is replicated."""
        epoch, replicas, in_sync = replica_set
        me = self._node.worker_id
        directory = task_directory(self._directory, task_id, me, len(replicas))
        rocks = self.stores[task_id] = RocksStore(directory)
        store: Store = rocks
        transport: Transport = self.transport
        if len(replicas) > 1:
            leader = self.leaders[task_id] = Leader(
                self.runtime.name, task_id, epoch, rocks, directory, [w for w in replicas if w != me], in_sync,
                self._node.send_replication, functools.partial(self._node.propose_in_sync, self.runtime.name))
            store, transport = leader.store, HeldTransport(leader, self.transport)
        task = Task(self.runtime, task_id, WatchedStore(store, self.hub, task_id), transport, SYSTEM_CLOCK)
        inbox = self.transport.add_task(task_id, task.serve_read)
        host = self.hosts[task_id] = TaskThread(task, inbox, on_failure=self._task_failed,
                                                batching=self.transport.batching)
        self.transport.add_host(task_id, host.run_round_here)
        return host

    def promote(self, task_id: int, replica_set: ReplicaSet) -> None:
        """The follower of `task_id` here becomes its leader (the controller chose it): its store,
        a caught-up copy, becomes the task's, which recovers from it as after a crash."""
        replica = self.replicas.pop(task_id, None)
        if replica is not None:
            replica.close()
        host = self._lead(task_id, replica_set)
        self.transport.move(task_id, self._node.worker_id)
        if not self.closed:
            host.start()
            self.leaders[task_id].start()

    def moved(self, task_id: int, worker: int) -> None:
        """Task `task_id` is led by `worker` now: send to it there. If this worker led it (a leader
        cut off and deposed meanwhile), it stops here; it follows again when this worker restarts."""
        self.remote_watches.again({task_id})
        # This worker's own clients (its front's sockets) watched it here: from now on, from there.
        # The other processes' forwarders are dropped: their holders watch again by themselves.
        for subscriber, pstate, steps in self.hub.release_task(task_id):
            if isinstance(subscriber, Subscription):
                self.remote_watches.adopt(subscriber, task_id, pstate, steps)
        host = self.hosts.pop(task_id, None)
        self.stores.pop(task_id, None)
        if host is not None:
            stop_hosts([host])
            host.task.store.close()
            self.leaders.pop(task_id, None)
            self.transport.remove_task(task_id)
        self.transport.move(task_id, worker)

    def _gone(self) -> str:
        return f"no longer running on worker {self._node.worker_id}"

    def _task_failed(self, host: TaskThread, error: BaseException) -> None:
        """A task here stopped on an internal error: its clients here fail at once, the supervisor's too."""
        self.failures[host.task.task_id] = repr(error)
        self._node.task_failed(host, error)

    def start(self) -> None:
        for host in self.hosts.values():
            host.start()
        for leader in self.leaders.values():
            leader.start()

    def watch(self, task: int, pstate: str, steps: tuple, callback: Any, label: str, *, on_commit: Any = None) -> Any:
        """A subscription by a client of this worker (its HTTP front): from this worker's hub if it
        leads the task, else from the worker that does, which sends it the diffs."""
        self.check_open()
        if task in self.hosts:
            return self.hub.subscribe(task, pstate, steps, callback, label, on_commit=on_commit)
        return self.remote_watches.watch(task, pstate, steps, callback, label, on_commit)

    def watch_on(self, task: int, pstate: str, steps: tuple, watch_id: int) -> Any:
        """Have the worker leading `task` send the diffs of a path to watch `watch_id` here; its value."""
        return self._node.peer(self.transport.placement_of(task)).call(
            "watch", self.runtime.name, task, pstate, steps, watch_id, self._node.worker_id)

    def unwatch_on(self, task: int, watch_id: int) -> None:
        try:
            self._node.peer(self.transport.placement_of(task)).call("unwatch", self.runtime.name, watch_id)
        except Unavailable:
            pass  # that worker is gone, and the watch with it

    def forward_watch(self, task: int, pstate: str, steps: tuple, watch_id: int, holder: int | None) -> Any:
        """Send the diffs of a path of task `task` (led here) to subscription `watch_id` in process
        `holder` (a worker, or None: the supervisor); returns the path's current value."""
        forwarder = _Forwarder(self, watch_id, holder)
        self._forwarders[watch_id] = forwarder
        self.hub.attach(task, pstate, steps, forwarder.start, f"{self.runtime.name}.{pstate}")
        return forwarder.value

    def unwatch(self, watch_id: int) -> None:
        forwarder = self._forwarders.pop(watch_id, None)
        if forwarder is not None:
            self.hub.detach(forwarder)

    def stop(self) -> None:
        self.hub.close()
        self.remote_watches.close()
        self.closed = self.transport.closed = True
        stop_hosts(list(self.hosts.values()))
        for host in self.hosts.values():
            host.task.store.close()
        for replica in self.replicas.values():
            replica.close()
        self.router.fail_all(f"module {self.runtime.name!r} stopped on worker {self._node.worker_id} before the "
                             "reply came; the event may be durable: append again with the same idempotency_key")


class _Forwarder:
    """A subscription held by another process: this worker's hub sends it each commit's diffs."""

    def __init__(self, deployment: _Deployment, watch_id: int, holder: int | None) -> None:
        self._deployment, self.watch_id, self._holder = deployment, watch_id, holder
        self.value: Any = None

    def start(self, value: Any) -> _Forwarder:
        self.value = value
        return self

    def deliver(self, diffs: list[Any], value: Any) -> None:
        deployment = self._deployment
        deployment.transport.post(self._holder, WatchDiffs(deployment.runtime.name, self.watch_id, dumps(diffs)))

    def close(self) -> None:
        """The module stopped here: its holder re-watches where the task runs next."""

    def end(self, reason: str) -> None:
        """What it watched is gone: its holder finds out when it watches again (NotFound there)."""


class WorkerCluster(ClusterClients[_Deployment]):
    """The client half of a cluster in a worker process, over the modules it hosts: what a front
    (the HTTP server) serves from. Deploying and updating happen in the supervisor; `status` is
    asked of it."""

    def __init__(self, node: WorkerNode) -> None:
        super().__init__(node.deployments)  # the worker's own table: an update there shows here at once
        self._node = node

    def __repr__(self) -> str:
        return f"<WorkerCluster worker={self._node.worker_id} modules={sorted(self._deployments)}>"

    def _refuse(self, what: str) -> Unavailable:
        return Unavailable(f"{what} happens in the process that runs the LocalCluster, not in worker "
                           f"{self._node.worker_id}")

    def deploy(self, module: Module, *, tasks: int | None = None, replication: int | None = None,
               delete: Sequence[str] = ()) -> None:
        raise self._refuse("deploying")

    def update(self, module: Module, *, delete: Sequence[str] = (), dry_run: bool = False) -> ModuleInfo:
        raise self._refuse("updating a module object (a front updates from an app file's source: apply_app)")

    def apply_app(self, source: bytes | str, *, filename: str = "app.py", delete: Sequence[str] = (),
                  dry_run: bool = False, tasks: int = 1) -> list[dict[str, Any]]:
        """The supervisor loads and applies the source: it is where modules are deployed from."""
        return self._node.supervisor.call("apply_app", source, filename, list(delete), dry_run, tasks,
                                          timeout_s=APPLY_APP_CALL_S)

    def destroy(self, name: str) -> None:
        raise self._refuse("destroying a module")

    def status(self) -> dict[str, list[dict[str, Any]]]:
        return self._node.supervisor.call("status", timeout_s=STATUS_CALL_S)

    def backup(self, destination: str | os.PathLike[str], *, keep: int | None = None) -> BackupInfo:
        """The supervisor takes the backup (it holds every worker's tasks for the cut)."""
        return BackupInfo.from_json(self._node.supervisor.call("backup", os.fspath(destination), keep,
                                                               timeout_s=BACKUP_CALL_S))

    def close(self) -> None:
        self._query_pool.shutdown(wait=False, cancel_futures=True)


class WorkerNode:
    """A worker's tasks, links and calls, in this process (`main`'s, or a RayCluster's actor's).

    It listens for its peers on `host` (loopback, or the Ray node's address when a RayCluster spans
    machines) and connects to its supervisor at `supervisor_host`:`supervisor_port`.
    """

    def __init__(self, worker_id: int, supervisor_port: int, *, host: str = "127.0.0.1",
                 supervisor_host: str = "127.0.0.1") -> None:
        self.worker_id = worker_id
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.deployments: dict[str, _Deployment] = {}
        self._fronts: list[Any] = []  # what `front` started (an HTTP server): each has stop()
        self._cluster: WorkerCluster | None = None
        self._peers: dict[int, Link] = {}
        self._peer_ports: dict[int, int] = {}
        self._peer_hosts: dict[int, str] = {}  # the workers not on loopback (a RayCluster's on other machines)
        self._lock = threading.Lock()
        self._calls = concurrent.futures.ThreadPoolExecutor(WORKER_CALL_THREADS, thread_name_prefix="headwater-call")
        self._ops: dict[str, Callable[..., Any]] = {
            "open": self._open, "start": self._start, "stop": self._stop, "read": self._read,
            "hold": self._hold, "release": self._release, "ping": lambda: os.getpid(),
            "front": self._front, "stop_fronts": self._stop_fronts, "peer_moved": self._peer_moved,
            "replication": self._replication, "promote": self._promote, "moved": self._moved,
            "watch": self._watch, "unwatch": self._unwatch,
            "backup_flush": self._backup_flush, "backup_hold": self._backup_hold,
            "backup_release": self._backup_release, "backup_checkpoint": self._backup_checkpoint,
            "backup_copy": self._backup_copy,
        }
        # Per backup under way: the hold on the tasks led here, then their checkpoints.
        self._backups: dict[str, TaskPause] = {}
        self._checkpoints: dict[str, dict[Hashable, Path]] = {}
        self.supervisor = connect(supervisor_port, self._on_frame, "the supervisor", on_close=self._orphaned,
                                  host=supervisor_host)
        self.supervisor.send(Hello(worker_id, self.port, os.getpid(), host))
        threading.Thread(target=self._accept, name="headwater-accept", daemon=True).start()
        threading.Thread(target=self._watch_replication, name="headwater-replication", daemon=True).start()

    @property
    def cluster(self) -> WorkerCluster:
        """The client half of the cluster in this worker: its fronts' and its modules' mirrors'."""
        with self._lock:
            if self._cluster is None:
                self._cluster = WorkerCluster(self)
            return self._cluster

    # ---- links -------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            sock, _ = self._listener.accept()
            Link(sock, self._on_frame, "a peer worker").start()

    def peer(self, worker: int) -> Link:
        link = self._peers.get(worker)
        if link is not None and not link.closed:
            return link
        with self._lock:
            link = self._peers.get(worker)
            if link is None or link.closed:
                port = self._peer_ports.get(worker)
                if port is None:
                    raise Unavailable(f"worker {worker} is not known to worker {self.worker_id}")
                try:
                    link = self._peers[worker] = connect(port, self._on_frame, f"worker {worker}",
                                                         host=self._peer_hosts.get(worker, "127.0.0.1"))
                except OSError as e:
                    raise Unavailable(f"worker {worker} is not reachable ({e}); it is being restarted, retry in a "
                                      "moment") from None
            return link

    def _on_frame(self, link: Link, envelope: Any) -> None:
        if isinstance(envelope, ToTask):
            deployment = self.deployments.get(envelope.module)
            if deployment is not None:  # else: stopped, or a message from before this worker's restart
                deployment.transport.deliver(envelope.task, envelope.message)
        elif isinstance(envelope, ToClient):
            deployment = self.deployments.get(envelope.module)
            if deployment is not None:
                deployment.router.deliver(envelope.message)
        elif isinstance(envelope, WatchDiffs):
            deployment = self.deployments.get(envelope.module)
            if deployment is not None:
                deployment.remote_watches.received(envelope)
        elif isinstance(envelope, REPLICATION_FRAMES):
            self._on_replication(envelope)
        elif isinstance(envelope, Call):
            op = self._ops.get(envelope.op) or functools.partial(self._unknown, envelope.op)
            if envelope.op == "ping" or (envelope.op == "read" and self._is_point_read(envelope)):
                # A ping is the supervisor's heartbeat: a full call pool (slow queries) must not
                # make a live worker look dead.
                link.answer(envelope, op)  # microseconds of RocksDB: no hand-off to the pool and back
            else:
                self._calls.submit(link.answer, envelope, op)

    def _is_point_read(self, call: Call) -> bool:
        """A read bounded and quick enough to answer on the link's reader thread: a lookup of one
        value that nothing subindexed can make large. Anything that may scan (a range, a select, a
        whole subindexed value, a step, a query) goes to the pool, so the link keeps delivering hops."""
        module, _, request = pickle.loads(call.payload)
        if request[0] == "depot_end":
            return True
        if request[0] != "pstate":
            return False
        _, name, steps, op, _, _ = request
        if op in _POINT_READ_OPS:
            return True
        deployment = self.deployments.get(module)
        pstate = deployment.runtime.pstates.get(name) if deployment is not None else None
        schema = pstate.decl.schema if pstate is not None else None
        return op == "get" and bool(steps) and isinstance(schema, Map) and not schema.value_schema.split

    def _orphaned(self, _: Link) -> None:
        os._exit(0)  # the supervisor is gone: so is this worker (its data is durable; nothing to flush)

    def _unknown(self, op: str, *_: Any) -> None:
        raise NotFound("worker call", op, self._ops)

    def task_failed(self, host: TaskThread, error: BaseException) -> None:
        try:
            self.supervisor.send(Failed(host.task.runtime.name, host.task.task_id, repr(error)))
        except Unavailable:
            pass

    # ---- calls from the supervisor and peers --------------------------------------------------
    def _open(self, module_bytes: bytes, catalog: Catalog, directory: str, sets: list[ReplicaSet],
              peer_ports: dict[int, int], writer_kinds: dict[str, str],
              peer_hosts: dict[int, str] | None = None) -> dict[int, tuple[str | None, str]]:
        """Open a module's tasks led here; the tasks whose resources could not be built: (resource, why)."""
        module = pickle.loads(module_bytes)
        _adopt_modules_sent_by_value(module)
        self._peer_ports.update(peer_ports)
        self._peer_hosts.update(peer_hosts or {})
        deployment = self.deployments[module.name] = _Deployment(self, module, catalog, Path(directory), sets,
                                                                 writer_kinds)
        return deployment.resource_errors

    def _promote(self, module: str, task: int, replica_set: ReplicaSet) -> None:
        self._deployment(module).promote(task, replica_set)

    def _moved(self, module: str, task: int, worker: int) -> None:
        deployment = self.deployments.get(module)
        if deployment is not None:
            deployment.moved(task, worker)

    def propose_in_sync(self, module: str, task: int, epoch: int, in_sync: list[int]) -> bool:
        """Ask the controller (the supervisor) to record `in_sync` as the task's in-sync followers."""
        try:
            return bool(self.supervisor.call("in_sync", module, task, epoch, in_sync, timeout_s=PROPOSE_CALL_S))
        except Unavailable:
            return False  # cut off from the controller: nothing changes

    def send_replication(self, worker: int, envelope: Any) -> bool:
        """A replication frame to `worker`; False if it is unreachable (the two sides resync by hello)."""
        try:
            self.peer(worker).send(envelope)
            return True
        except Unavailable as e:
            _log.info("dropped a replication frame for worker %s: %s", worker, e)
            return False

    def _on_replication(self, envelope: Any) -> None:
        deployment = self.deployments.get(envelope.module)
        if deployment is None:
            return  # not open here (yet, or any more): the sides resync by hello
        if isinstance(envelope, (ReplicaAck, ReplicaHello, ReplicaFenced)):
            leader = deployment.leaders.get(envelope.task)
            if leader is not None:
                leader.on_frame(envelope)
        else:
            replica = deployment.replicas.get(envelope.task)
            if replica is not None:
                replica.on_frame(envelope)

    def _watch_replication(self) -> None:
        while True:
            time.sleep(REPLICATION_CHECK_S)
            now = time.monotonic()
            for deployment in list(self.deployments.values()):
                for leader in list(deployment.leaders.values()):
                    leader.check(now)

    def _replication(self, module: str) -> dict[int, list[dict[str, Any]]]:
        """For status(): each replicated task led here, with its followers' state."""
        return {task: leader.describe() for task, leader in self._deployment(module).leaders.items()}

    def _peer_moved(self, worker: int, port: int, host: str = "127.0.0.1") -> None:
        """Worker `worker` restarted and listens on `host`:`port` now: the next message to it connects there."""
        with self._lock:
            self._peer_ports[worker] = port
            self._peer_hosts[worker] = host
            link = self._peers.pop(worker, None)
        if link is not None:
            link.close()
        for deployment in list(self.deployments.values()):  # its forwarders died with it: watch again
            deployment.remote_watches.again(deployment.transport.tasks_on(worker))

    def _front(self, factory: Callable[..., Any], *args: Any) -> dict[str, Any]:
        """Start `factory(cluster, *args)` over this worker's `WorkerCluster`: an HTTP server, say.

        The factory travels pickled by reference, so the cluster layer never imports what it
        starts; what it returns is stopped by `stop_fronts`, and its `info()` (if it has one) is
        the answer, which the supervisor shows in `status()`."""
        front = factory(self.cluster, *args)
        self._fronts.append(front)
        return front.info() if hasattr(front, "info") else {}

    def _stop_fronts(self) -> None:
        fronts, self._fronts = self._fronts, []
        for front in fronts:
            front.stop()

    def _start(self, module: str) -> None:
        self.deployments[module].start()

    def _stop(self, module: str) -> None:
        deployment = self.deployments.pop(module, None)
        if deployment is not None:
            deployment.stop()

    def _deployment(self, module: str) -> _Deployment:
        deployment = self.deployments.get(module)
        if deployment is None:
            raise Unavailable(f"module {module!r} is not running on worker {self.worker_id}")
        return deployment

    def _watch(self, module: str, task: int, pstate: str, steps: tuple, watch_id: int, holder: int | None) -> Any:
        return self._deployment(module).forward_watch(task, pstate, steps, watch_id, holder)

    def _unwatch(self, module: str, watch_id: int) -> None:
        deployment = self.deployments.get(module)
        if deployment is not None:
            deployment.unwatch(watch_id)

    def _read(self, module: str, task_id: int, request: tuple[Any, ...]) -> Any:
        return self._deployment(module).transport.read(task_id, request)

    # ---- backups: the supervisor holds every worker's tasks, then each checkpoints and copies its own
    def _led(self, modules: Sequence[str]) -> TaskPause:
        return TaskPause([((name, task), host, deployment.stores[task])
                          for name in modules if (deployment := self.deployments.get(name)) is not None
                          for task, host in deployment.hosts.items() if task in deployment.stores])

    def _backup_flush(self, modules: Sequence[str]) -> None:
        self._led(modules).flush()

    def _backup_hold(self, backup_id: str, modules: Sequence[str], timeout_s: float,
                     expires_s: float) -> list[Hashable] | None:
        """Hold the tasks of `modules` led here between rounds (all or none, waiting at most `timeout_s`);
        the hold ends by itself after `expires_s` unless their checkpoints began. The tasks held, or None."""
        pause = self._led(modules)
        if not pause.take(timeout_s):
            return None
        self._backups[backup_id] = pause
        pause.expire_after(expires_s)
        return [key for key, _, _ in pause.tasks]

    def _backup_release(self, backup_id: str) -> None:
        """Let go of the backup's tasks, and drop its checkpoints here (a cut given up, or a backup that failed)."""
        pause = self._backups.pop(backup_id, None)
        if pause is not None:
            pause.release()
        for path in self._checkpoints.pop(backup_id, {}).values():
            shutil.rmtree(path, ignore_errors=True)

    def _backup_checkpoint(self, backup_id: str, staging: str) -> dict[Hashable, float]:
        """Checkpoint each held task's store under `staging`, letting it go; per task, the seconds it was held."""
        pause = self._backups.pop(backup_id, None)
        if pause is None:
            raise Unavailable(f"worker {self.worker_id} holds no tasks for backup {backup_id!r}; try the backup again")
        taken = pause.checkpoint(Path(staging), task_key_directory)
        self._checkpoints[backup_id] = {key: path for key, (path, _) in taken.items()}
        return {key: held_s for key, (_, held_s) in taken.items()}

    def _backup_copy(self, backup_id: str, destination: str) -> dict[Hashable, CopiedFiles]:
        """Copy this worker's checkpoints of the backup into `destination` (then delete them)."""
        checkpoints = self._checkpoints.pop(backup_id, {})
        try:
            return {key: copy_checkpoint(path, Path(destination)) for key, path in checkpoints.items()}
        finally:
            for path in checkpoints.values():
                shutil.rmtree(path, ignore_errors=True)

    def _gate(self, module: str) -> _CommitGate:
        gate = self._deployment(module).transport.gate
        assert gate is not None, "holds go to the worker hosting task 0"
        return gate

    def _hold(self, module: str, token: Hashable) -> None:
        self._gate(module).enter(("remote", token))

    def _release(self, module: str, token: Hashable) -> None:
        self._gate(module).leave(("remote", token))


_adopted: set[str] = set()  # modules made by _adopt_modules_sent_by_value


def _adopt_modules_sent_by_value(module: Module) -> None:
    """Give the code a module brought by value a home in `sys.modules`, under its own name.

    An app file loaded from its path (`headwater serve app.py`) or a notebook's code has no module
    a worker could import, so it arrives by value; but the engine pickles hop arguments and results
    by reference (`app.Transfer`), which needs the name to resolve here as it does in the
    supervisor. The module is made from what its functions arrived with: their globals, which
    hold every class and function they use, plus the event types.
    """
    functions = [decl.fn for table in (module.streams, module.microbatches, module.steps, module.queries)
                 for decl in table.values()]
    found: dict[str, types.ModuleType] = {}
    for thing in (*functions, *(decl.event_type for decl in module.depots.values())):
        name = getattr(thing, "__module__", None)
        if not name or (name in sys.modules and name not in _adopted and name not in found):
            continue  # importable here: pickling by reference already works
        home = found.get(name)
        if home is None:  # new, or replacing what an earlier version of the module brought
            home = found[name] = sys.modules[name] = types.ModuleType(name)
            _adopted.add(name)
        if isinstance(thing, types.FunctionType):
            home.__dict__.update({k: v for k, v in thing.__globals__.items() if not k.startswith("__")})
        home.__dict__.setdefault(thing.__qualname__.partition(".")[0], thing)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a headwater worker process (started by LocalCluster)")
    parser.add_argument("--supervisor", type=int, required=True, help="the supervisor's port on 127.0.0.1")
    parser.add_argument("--worker", type=int, required=True, help="this worker's id")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the supervisor stops its workers itself,
    # after the requests in flight are answered, so a worker must not die of it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack: where a worker is stuck
    logging.basicConfig(level=logging.WARNING, format=f"worker {args.worker}: %(levelname)s %(name)s: %(message)s")
    WorkerNode(args.worker, args.supervisor)
    threading.Event().wait()  # everything runs on the node's threads; the process ends with its supervisor
