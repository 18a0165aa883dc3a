"""The in-process transport: tasks' inboxes are queues, and reads run in the caller's thread.

A full-ack appender that would only wait runs the task's round on its own thread when no round
is running (flat combining, `Task.run_round_here`): with few clients that skips waking the task
thread and then waking the appender again, two hand-offs of the interpreter lock per append.

It implements `headwater.engine.transport.Transport`, the seam the engine talks through; a Ray
implementation (actors) will implement the same interface.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from headwater.engine.transport import Transport
from headwater.errors import Unavailable

__all__ = ["APPENDS_IN_FLIGHT_MAX", "InProcessTransport"]

# Appends admitted to one task and not yet fully processed. When a task has this many,
# appenders wait: a flood slows appenders instead of growing queues without bound.
APPENDS_IN_FLIGHT_MAX = 2048


class _CommitBarrier:
    """A readers-writer lock that prefers the writer, reentrant for readers on one thread.

    Readers are queries and client reads; the writer is a microbatch applying a batch on every
    task. Preferring the writer keeps a stream of reads from postponing a commit forever. Reads
    are the hot path, so entering and leaving take one plain lock when no commit is waiting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._local = threading.local()

    def enter(self) -> None:
        local = self._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        if depth:
            return  # already inside a consistent read on this thread (a query's nested reads)
        with self._lock:
            while self._writing or self._writers_waiting:
                self._condition.wait()
            self._readers += 1

    def exit(self) -> None:
        local = self._local
        local.depth -= 1
        if local.depth:
            return
        with self._lock:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:
                self._condition.notify_all()

    @contextmanager
    def reading(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.exit()

    def acquire_writing(self) -> None:
        with self._lock:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writing = True

    def release_writing(self) -> None:
        with self._lock:
            self._writing = False
            self._condition.notify_all()


class _Admission:
    """Counts the appends in flight to one task; appenders wait only while it is full.

    Admitting and releasing take one plain lock (a threading.Semaphore would take a
    Python-level Condition on every call, and the task releases once per append).
    """

    __slots__ = ("_free", "_lock", "_room", "_waiting")

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._free = limit
        self._waiting = 0

    def acquire(self, timeout_s: float) -> bool:
        with self._lock:
            if self._free > 0:
                self._free -= 1
                return True
            deadline = time.monotonic() + timeout_s
            self._waiting += 1
            try:
                while self._free <= 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._room.wait(remaining)
                self._free -= 1
                return True
            finally:
                self._waiting -= 1

    def release(self, count: int) -> None:
        with self._lock:
            self._free += count
            if self._waiting:
                self._room.notify(count)


class Inbox:
    """A task's queue of messages. The task thread waits for one without taking it (`wait`), so
    every message is taken by whichever thread runs the next round, in arrival order; `poke`
    wakes the task thread with no message (a round run elsewhere left work behind)."""

    __slots__ = ("_items", "_mutex", "_wake", "_sleeping", "_poked")

    def __init__(self) -> None:
        self._items: deque[bytes] = deque()
        self._mutex = threading.Lock()
        self._wake = threading.Lock()
        self._wake.acquire()
        self._sleeping = False
        self._poked = False

    def put(self, item: bytes, *, wake: bool = True) -> None:
        with self._mutex:
            self._items.append(item)
            if wake:
                self._wake_sleeper()

    def poke(self) -> None:
        with self._mutex:
            self._poked = True
            self._wake_sleeper()

    def _wake_sleeper(self) -> None:
        # Under _mutex: the wake lock is released at most once per wait.
        if self._sleeping:
            self._sleeping = False
            self._wake.release()

    def wait(self) -> None:
        with self._mutex:
            if self._items or self._poked:
                self._poked = False
                return
            self._sleeping = True
        self._wake.acquire()
        with self._mutex:
            self._poked = False

    def get_nowait(self) -> bytes:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None


class InProcessTransport(Transport):
    def __init__(self) -> None:
        self._inboxes: dict[int, Inbox] = {}
        self._slots: dict[int, _Admission] = {}
        self._readers: dict[int, Callable[[tuple[Any, ...]], Any]] = {}
        self._rounds: dict[int, Callable[[float], None]] = {}
        self._clients: dict[int, Callable[[bytes], None]] = {}
        self._barrier = _CommitBarrier()
        self.closed = False

    # wiring, done by the cluster before any task starts
    def register_task(self, task_id: int, read: Callable[[tuple[Any, ...]], Any],
                      run_round_here: Callable[[float], None]) -> Inbox:
        inbox = Inbox()
        self._inboxes[task_id] = inbox
        self._slots[task_id] = _Admission(APPENDS_IN_FLIGHT_MAX)
        self._readers[task_id] = read
        self._rounds[task_id] = run_round_here
        return inbox

    def register_client(self, client_id: int, deliver: Callable[[bytes], None]) -> None:
        self._clients[client_id] = deliver

    def send(self, task_id: int, message: bytes) -> None:
        self._inboxes[task_id].put(message)

    def admit_append(self, task_id: int, message: bytes, *, timeout_s: float, caller_waits: bool = False) -> None:
        if self.closed:
            raise Unavailable("the cluster is closed")
        if not self._slots[task_id].acquire(timeout_s):
            from headwater.errors import AckTimeout

            raise AckTimeout(
                f"task {task_id} has {APPENDS_IN_FLIGHT_MAX} appends in flight and admitted none within "
                f"{timeout_s}s; nothing was appended. Retry later or raise the timeout"
            )
        inbox = self._inboxes[task_id]
        if caller_waits:
            inbox.put(message, wake=False)  # this thread runs the round, or wakes the task thread
            self._rounds[task_id](timeout_s)
        else:
            inbox.put(message)

    def release_appends(self, task_id: int, count: int) -> None:
        self._slots[task_id].release(count)

    def reply(self, client_id: int, message: bytes) -> None:
        deliver = self._clients.get(client_id)
        if deliver is not None:
            deliver(message)

    def read(self, task_id: int, request: tuple[Any, ...]) -> Any:
        # In process (and so also for read_many: threads would only take turns on the GIL), committed state is read in the caller's thread: RocksDB reads are
        # thread-safe and batches are atomic, so a reader never waits behind a busy task.
        if self.closed:
            raise Unavailable("the cluster is closed")
        barrier = self._barrier
        barrier.enter()
        try:
            return self._readers[task_id](request)
        finally:
            barrier.exit()

    def consistent_reads(self) -> AbstractContextManager[None]:
        return self._barrier.reading()

    def begin_commit(self) -> None:
        self._barrier.acquire_writing()

    def end_commit(self) -> None:
        self._barrier.release_writing()
