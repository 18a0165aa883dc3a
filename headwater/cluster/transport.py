"""The in-process transport: tasks' inboxes are queues, and reads run in the caller's thread.

A full-ack appender that would only wait runs the task's round on its own thread when no round
is running (flat combining, `Task.run_round_here`): with few clients that skips waking the task
thread and then waking the appender again, two hand-offs of the interpreter lock per append.

It implements `headwater.engine.transport.Transport`, the seam the engine talks through; a Ray
implementation (actors) will implement the same interface.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from headwater.client.seam import ClientTransport
from headwater.cluster.wire import dump_error, dumps, load_error
from headwater.engine.transport import check_message
from headwater.errors import Unavailable

__all__ = ["COMMIT_WAIT_MAX_S", "INBOX_BYTES_MAX", "InProcessTransport"]

# Bytes of messages (hops, topology appends, client appends) queued in one task's inbox. While
# any inbox of a module holds more, its tasks start no new records (hops and acks still flow),
# so fan-out cannot outrun the tasks that receive it.
INBOX_BYTES_MAX = 64 * 1024 * 1024
# Set to "1", every InProcessTransport round-trips reads through bytes (the test suite sets it).
STRICT_SEAM_ENV = "HEADWATER_STRICT_SEAM"
# The longest a query waits to start at a consistent cut (for a microbatch commit to finish).
COMMIT_WAIT_MAX_S = 60.0


class _CommitGate:
    """Gives queries a consistent cut of microbatch commits without anyone waiting for a query.

    A query holds the gate while its body runs; a microbatch's apply (the moment its staged
    writes land on every task) must not start while a query holds it. The coordinator asks with
    `begin_commit`, which never blocks: if queries hold the gate it answers False, and when the
    last of them lets go the gate starts the commit and sends the coordinator's `wake` message to
    its task. Meanwhile new queries wait (so a stream of queries cannot postpone a commit
    forever) — for the running queries and the apply, never longer than `COMMIT_WAIT_MAX_S`.
    Point reads never touch the gate: one task's state changes by whole batches anyway.

    A query that runs past its caller's timeout is abandoned (`abandon`): its hold goes at once,
    so the thread still running it holds nothing up. Holds are reentrant on one thread, for
    queries that call queries.
    """

    def __init__(self, send: Callable[[int, bytes], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Holders are threads (a query in this process) or a token of a query in another process.
        self._depth: dict[Hashable, int] = {}  # holder -> nesting depth of the query body it runs
        self._holding: set[Hashable] = set()  # holders whose query holds commits off (not abandoned)
        self._applying = 0  # commits started and not yet ended
        self._waiting: list[tuple[int, bytes]] = []  # commits waiting for holds: (task, wake message)

    def enter(self, holder: Hashable | None = None) -> None:
        me = threading.get_ident() if holder is None else holder
        with self._lock:
            depth = self._depth.get(me)
            if depth is not None:  # a query called by a query: inside the same cut
                self._depth[me] = depth + 1
                return
            deadline = time.monotonic() + COMMIT_WAIT_MAX_S
            while self._applying or self._waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(
                        f"a microbatch commit has not finished within {COMMIT_WAIT_MAX_S}s, so a query cannot "
                        "start at a consistent cut; check the module's tasks (status) and retry"
                    )
                self._changed.wait(remaining)
            self._depth[me] = 1
            self._holding.add(me)

    def exit(self, holder: Hashable | None = None) -> None:
        me = threading.get_ident() if holder is None else holder
        with self._lock:
            depth = self._depth[me] - 1
            if depth:
                self._depth[me] = depth
                return
            del self._depth[me]
            woken = self._release(me)
        self._wake(woken)

    def abandon(self, holder: Hashable) -> None:
        """Drop the hold of the query of `holder` (its thread id); it runs on, holding nothing."""
        with self._lock:
            woken = self._release(holder)
        self._wake(woken)

    def leave(self, holder: Hashable) -> None:
        """A query in another process ended (or was given up): its hold goes, whatever its depth."""
        with self._lock:
            self._depth.pop(holder, None)
            woken = self._release(holder)
        self._wake(woken)

    def _release(self, holder: Hashable) -> list[tuple[int, bytes]]:
        if holder not in self._holding:
            return []  # abandoned earlier
        self._holding.remove(holder)
        if self._holding or not self._waiting:
            return []
        woken, self._waiting = self._waiting, []
        self._applying += len(woken)
        return woken

    def _wake(self, woken: list[tuple[int, bytes]]) -> None:
        for task_id, message in woken:
            self._send(task_id, message)

    @contextmanager
    def reading(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.exit()

    def begin_commit(self, task_id: int, wake: bytes) -> bool:
        with self._lock:
            if self._holding:
                self._waiting.append((task_id, wake))
                return False
            self._applying += 1
            return True

    def end_commit(self) -> None:
        with self._lock:
            self._applying -= 1
            assert self._applying >= 0, "end_commit without begin_commit"
            if not self._applying:
                self._changed.notify_all()


class Inbox:
    """A task's queue of messages. The task thread waits for one without taking it (`wait`), so
    every message is taken by whichever thread runs the next round, in arrival order; `poke`
    wakes the task thread with no message (a round run elsewhere left work behind)."""

    __slots__ = ("_items", "_mutex", "_wake", "_sleeping", "_poked", "_held_bytes", "queued_bytes")

    def __init__(self) -> None:
        self._items: deque[bytes] = deque()
        # Of the messages waiting, and of those the task took but holds (`hold`): read without the
        # mutex, as a hint, by the transport's `congested`.
        self.queued_bytes = 0
        self._held_bytes = 0
        self._mutex = threading.Lock()
        self._wake = threading.Lock()
        self._wake.acquire()
        self._sleeping = False
        self._poked = False

    def put(self, item: bytes, *, wake: bool = True) -> None:
        with self._mutex:
            self._items.append(item)
            self.queued_bytes += len(item)
            if wake:
                self._wake_sleeper()

    def waiting(self) -> bool:
        """Whether messages wait to be taken (a hint, read without the lock: a round's background
        work stops early when one does)."""
        return bool(self._items)

    def poke(self) -> None:
        with self._mutex:
            self._poked = True
            self._wake_sleeper()

    def _wake_sleeper(self) -> None:
        # Under _mutex: the wake lock is released at most once per wait.
        if self._sleeping:
            self._sleeping = False
            self._wake.release()

    def wait(self, timeout_s: float | None = None) -> None:
        with self._mutex:
            if self._items or self._poked:
                self._poked = False
                return
            self._sleeping = True
        woken = self._wake.acquire(timeout=-1 if timeout_s is None else timeout_s)
        with self._mutex:
            if not woken:
                if self._sleeping:
                    self._sleeping = False  # nobody woke it
                else:
                    self._wake.acquire()  # woken just after the timeout: take the release back
            self._poked = False

    def hold(self, held_bytes: int) -> None:
        """The task holds this many bytes of messages it took (hops waiting for a slot of an async
        topology): they count towards the inbox's fill, so senders back off as for queued ones."""
        with self._mutex:
            self.queued_bytes += held_bytes - self._held_bytes
            self._held_bytes = held_bytes

    def take(self, count_max: int) -> list[bytes]:
        """The oldest messages, at most `count_max` of them (none if none wait)."""
        with self._mutex:
            items = self._items
            taken = [items.popleft() for _ in range(min(count_max, len(items)))]
            self.queued_bytes -= sum(map(len, taken))
            return taken


class InProcessTransport(ClientTransport):
    def __init__(self) -> None:
        self._inboxes: dict[int, Inbox] = {}
        self._readers: dict[int, Callable[[tuple[Any, ...]], Any]] = {}
        self._rounds: dict[int, Callable[[float], None]] = {}
        self._clients: dict[int, Callable[[bytes], None]] = {}
        self._gate = _CommitGate(self.send)
        self.closed = False
        # Strict mode (tests): reads cross as bytes, as they do between processes, so a request or
        # an answer that only works as a shared live object fails here too.
        self.strict = os.environ.get(STRICT_SEAM_ENV) == "1"

    # wiring, done by the cluster before any task starts
    def register_task(self, task_id: int, read: Callable[[tuple[Any, ...]], Any],
                      run_round_here: Callable[[float], None]) -> Inbox:
        inbox = Inbox()
        self._inboxes[task_id] = inbox
        self._readers[task_id] = read
        self._rounds[task_id] = run_round_here
        return inbox

    def register_client(self, client_id: int, deliver: Callable[[bytes], None]) -> None:
        self._clients[client_id] = deliver

    def send(self, task_id: int, message: bytes) -> None:
        check_message(message)
        if self.closed:
            raise Unavailable("the cluster is closed")
        self._inboxes[task_id].put(message)

    def submit_append(self, task_id: int, message: bytes, *, caller_waits: bool = False,
                      timeout_s: float = 0.0) -> None:
        check_message(message)
        if self.closed:
            raise Unavailable("the cluster is closed")
        inbox = self._inboxes[task_id]
        if caller_waits:
            inbox.put(message, wake=False)  # this thread runs the round, or wakes the task thread
            self._rounds[task_id](timeout_s)
        else:
            inbox.put(message)

    def congested(self) -> bool:
        return any(inbox.queued_bytes > INBOX_BYTES_MAX for inbox in self._inboxes.values())

    def reply(self, client_id: int, message: bytes) -> None:
        deliver = self._clients.get(client_id)
        if deliver is not None:
            deliver(message)

    def read(self, task_id: int, request: tuple[Any, ...]) -> Any:
        # In process (and so also for read_many: threads would only take turns on the GIL),
        # committed state is read in the caller's thread: RocksDB reads are thread-safe and
        # batches are atomic, so a reader never waits behind a busy task, nor behind a query.
        if self.closed:
            raise Unavailable("the cluster is closed")
        if not self.strict:
            return self._readers[task_id](request)
        try:
            answer = self._readers[task_id](pickle.loads(dumps(request)))
        except BaseException as e:
            raise load_error(dump_error(e)) from None
        return pickle.loads(dumps(answer))

    def consistent_reads(self) -> AbstractContextManager[None]:
        return self._gate.reading()

    def abandon_reads(self, thread_id: int) -> None:
        self._gate.abandon(thread_id)

    def begin_commit(self, task_id: int, wake: bytes) -> bool:
        return self._gate.begin_commit(task_id, wake)

    def end_commit(self) -> None:
        self._gate.end_commit()
