"""Client-side waiting for replies from tasks: one waiter per request, resolved by the transport.

A task answers an append it has no room for with `Busy`: nothing was appended, and the client
sends it again after a back-off, within the append's timeout. An appender that waits does that
itself; `Ack.NONE` appends, whose callers do not wait, are confirmed by an `Appended` reply and
sent again by the router's resender, and at most `UNCONFIRMED_MAX` of them wait for either.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from headwater.engine import messages
from headwater.engine.messages import Appended, Busy, Completed, Pong

__all__ = ["BUSY_BACKOFF_MAX_S", "BUSY_BACKOFF_MIN_S", "UNCONFIRMED_BYTES_MAX", "UNCONFIRMED_MAX", "FireGroup",
           "ReplyRouter", "Waiter"]

_log = logging.getLogger("headwater.client")

# The back-off before an append refused as Busy is sent again: doubling from the least to the most.
BUSY_BACKOFF_MIN_S = 0.001
BUSY_BACKOFF_MAX_S = 0.05
# Ack.NONE appends one deployment's clients sent and have not yet heard are durable (or were
# refused and wait to be sent again), and their event bytes. More wait for room: a flood of
# fire-and-forget appends to a full task slows its appenders instead of filling this process's
# memory. A batch bigger than either gets room when none is taken.
UNCONFIRMED_MAX = 4096
UNCONFIRMED_BYTES_MAX = 64 * 1024 * 1024


def next_backoff(backoff_s: float) -> float:
    return min(backoff_s * 2, BUSY_BACKOFF_MAX_S)


class _Signal:
    """A one-shot flag a thread can wait on: a bare lock, cheaper to set than a threading.Event.

    Setting it is one C-level lock release; an Event takes a Python-level Condition with its own
    locking on every set, which the task thread pays for each reply it sends.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout_s: float) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=max(0.0, timeout_s)):
            self._lock.release()
            return True
        return self._set


class Waiter:
    """One request's reply. Full-ack appends wait for Completed; with `durable=True` (Ack.APPEND)
    the Appended reply is the last, and a failure comes as Completed instead."""

    __slots__ = ("partition", "offset", "completed", "request", "busy", "event_bytes", "fire", "pong", "_durable",
                 "_done", "_loop", "_future")

    def __init__(self, partition: int, *, loop: asyncio.AbstractEventLoop | None = None, durable: bool = False,
                 fire: FireGroup | None = None) -> None:
        self.partition = partition
        self.offset: int | None = None
        self.completed: Completed | None = None
        self.request = 0  # set by ReplyRouter.register
        self.busy: Busy | None = None  # the task refused the append: nothing was appended; send it again
        self.fire = fire  # an Ack.NONE append's group, which the router sends again if refused
        self.event_bytes = 0  # of an Ack.NONE append: what it holds of the router's room
        self.pong: Pong | None = None  # the answer to a Ping
        self._durable = _Signal() if durable else None
        self._done = _Signal()
        self._loop = loop
        self._future: asyncio.Future[None] | None = loop.create_future() if loop else None

    @property
    def durable_only(self) -> bool:
        """It waits for durability (Ack.APPEND): an Appended reply is its last."""
        return self._durable is not None

    def on_appended(self, message: Appended) -> None:
        self.offset = message.offset
        if self._durable is not None:
            self._durable.set()

    def on_completed(self, message: Completed) -> None:
        if message.offset >= 0:
            self.offset = message.offset
        self.completed = message
        self._wake()

    def on_pong(self, message: Pong) -> None:
        self.pong = message
        self._done.set()

    def on_busy(self, message: Busy) -> None:
        self.busy = message
        self._wake()

    def _wake(self) -> None:
        """The last reply came: whoever waits, for durability or for the end, wakes."""
        if self._durable is not None:
            self._durable.set()
        self._done.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    def wait_durable(self, timeout_s: float) -> bool:
        assert self._durable is not None, "made without durable=True"
        return self._durable.wait(timeout_s)

    def wait_done(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)

    async def wait_done_async(self, timeout_s: float) -> bool:
        assert self._future is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._future), timeout_s)
        except TimeoutError:
            return False
        return True


class FireGroup:
    """Ack.NONE appends sent to one task in one message: each is confirmed by its Appended reply;
    refused (Busy, all together), the group is sent again after a back-off until `deadline`."""

    __slots__ = ("backoff_s", "deadline", "event_bytes", "send", "size", "waiters", "_resending")

    def __init__(self, send: Callable[[FireGroup], None], waiters: list[Waiter], event_bytes: list[int],
                 deadline: float) -> None:
        self.send = send  # registers the group's waiters anew and hands the message to the transport
        self.waiters = waiters
        self.size = len(waiters)
        self.event_bytes = sum(event_bytes)
        for waiter, size in zip(waiters, event_bytes, strict=True):
            waiter.fire = self
            waiter.event_bytes = size
        self.deadline = deadline
        self.backoff_s = BUSY_BACKOFF_MIN_S
        self._resending = False

    def refused(self) -> bool:
        """The first Busy of a round of sending: schedule one resend (False for the others)."""
        if self._resending:
            return False
        self._resending = True
        return True

    def resend(self) -> None:
        self._resending = False
        self.backoff_s = next_backoff(self.backoff_s)
        self.send(self)


class _Resender:
    """One daemon thread, started on first use, that sends refused Ack.NONE groups again when due."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)
        self._queue: list[tuple[float, int, FireGroup]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, group: FireGroup) -> None:
        with self._lock:
            heapq.heappush(self._queue, (time.monotonic() + group.backoff_s, next(self._order), group))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="headwater-resend", daemon=True)
                self._thread.start()
            self._due.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue or self._queue[0][0] > time.monotonic():
                    self._due.wait(self._queue[0][0] - time.monotonic() if self._queue else None)
                _, _, group = heapq.heappop(self._queue)
            try:
                group.resend()
            except Exception as e:  # the module stopped, say (sending forgot, and so settled, its appends)
                _log.warning("%s Ack.NONE append(s) refused by a busy task could not be sent again, and are "
                             "dropped: %s", group.size, e)


class ReplyRouter:
    """Hands each reply a task sends to the waiter of its request."""

    def __init__(self) -> None:
        self._requests = itertools.count(1)
        self._waiters: dict[int, Waiter] = {}
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._unconfirmed = 0  # Ack.NONE appends reserved and not yet settled
        self._unconfirmed_bytes = 0  # their event bytes
        self._resender = _Resender()

    def register(self, waiter: Waiter) -> int:
        request = next(self._requests)
        self._waiters[request] = waiter
        waiter.request = request
        return request

    def reregister(self, waiter: Waiter) -> int:
        """Register `waiter` under a new request id, dropping its old one: a late reply to an earlier
        sending of the same append (a Busy) then finds no one."""
        self._waiters.pop(waiter.request, None)
        return self.register(waiter)

    def reserve(self, group: FireGroup, timeout_s: float) -> bool:
        """Room for a group of Ack.NONE appends (waiting up to `timeout_s`), or False."""
        with self._lock:
            deadline = time.monotonic() + timeout_s
            while self._unconfirmed and (self._unconfirmed + group.size > UNCONFIRMED_MAX
                                         or self._unconfirmed_bytes + group.event_bytes > UNCONFIRMED_BYTES_MAX):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._room.wait(remaining)
            self._unconfirmed += group.size
            self._unconfirmed_bytes += group.event_bytes
            return True

    def _settled(self, *waiters: Waiter) -> None:
        """Ack.NONE appends were confirmed, failed, or given up."""
        with self._lock:
            self._unconfirmed -= len(waiters)
            self._unconfirmed_bytes -= sum(waiter.event_bytes for waiter in waiters)
            self._room.notify_all()

    def forget(self, request: int) -> None:
        waiter = self._waiters.pop(request, None)
        if waiter is not None and waiter.fire is not None:
            self._settled(waiter)

    def fail_all(self, reason: str) -> None:
        """Wake every waiter with `reason`: their cluster is going away and no reply will come."""
        waiters, self._waiters = self._waiters, {}
        for request, waiter in waiters.items():
            offset = waiter.offset if waiter.offset is not None else -1
            waiter.on_completed(Completed(request, waiter.partition, offset, {}, [], reason, "Unavailable"))
        self._settled(*(waiter for waiter in waiters.values() if waiter.fire is not None))

    def fail_tasks(self, tasks: set[int], reason: str) -> None:
        """Wake the waiters of appends to `tasks` with `reason`: those tasks restarted, and their
        replies will not come (an append's partition is its task)."""
        with self._lock:
            failing = {request: waiter for request, waiter in self._waiters.items() if waiter.partition in tasks}
            for request in failing:
                del self._waiters[request]
        for request, waiter in failing.items():
            offset = waiter.offset if waiter.offset is not None else -1
            waiter.on_completed(Completed(request, waiter.partition, offset, {}, [], reason, "Unavailable"))
        self._settled(*(waiter for waiter in failing.values() if waiter.fire is not None))

    def deliver(self, data: bytes) -> None:
        message: Any = messages.decode(data)
        if isinstance(message, Appended):
            waiter = self._waiters.get(message.request)
            if waiter is not None:
                if waiter.durable_only:  # no Completed follows for Ack.APPEND
                    del self._waiters[message.request]
                    if waiter.fire is not None:
                        self._settled(waiter)
                waiter.on_appended(message)
        elif isinstance(message, Completed):
            waiter = self._waiters.pop(message.request, None)
            if waiter is not None:
                if waiter.fire is not None:
                    self._settled(waiter)
                waiter.on_completed(message)
        elif isinstance(message, Pong):
            waiter = self._waiters.pop(message.request, None)
            if waiter is not None:
                waiter.on_pong(message)
        elif isinstance(message, Busy):
            waiter = self._waiters.pop(message.request, None)
            if waiter is None:
                return
            group = waiter.fire
            if group is None:
                waiter.on_busy(message)  # its appender sends it again
                return
            if not group.refused():
                return  # another append of its group scheduled the resend; it stays counted till then
            if time.monotonic() >= group.deadline:
                _log.warning("%s Ack.NONE append(s) were refused by their busy task until their timeout, and are "
                             "dropped", group.size)
                self._settled(*group.waiters)
            else:  # still counted: sending the group again registers its appends anew
                self._resender.schedule(group)
