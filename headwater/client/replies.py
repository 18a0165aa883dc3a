"""Client-side waiting for replies from tasks: one waiter per request, resolved by the transport."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

from headwater.engine import messages
from headwater.engine.messages import Appended, Completed

__all__ = ["ReplyRouter", "Waiter"]


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

    __slots__ = ("partition", "offset", "completed", "request", "_durable", "_done", "_loop", "_future")

    def __init__(self, partition: int, *, loop: asyncio.AbstractEventLoop | None = None, durable: bool = False) -> None:
        self.partition = partition
        self.offset: int | None = None
        self.completed: Completed | None = None
        self.request = 0  # set by ReplyRouter.register
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


class ReplyRouter:
    """Hands each reply a task sends to the waiter of its request."""

    def __init__(self) -> None:
        self._requests = itertools.count(1)
        self._waiters: dict[int, Waiter] = {}

    def register(self, waiter: Waiter) -> int:
        request = next(self._requests)
        self._waiters[request] = waiter
        waiter.request = request
        return request

    def forget(self, request: int) -> None:
        self._waiters.pop(request, None)

    def fail_all(self, reason: str) -> None:
        """Wake every waiter with `reason`: their cluster is going away and no reply will come."""
        waiters, self._waiters = self._waiters, {}
        for request, waiter in waiters.items():
            offset = waiter.offset if waiter.offset is not None else -1
            waiter.on_completed(Completed(request, waiter.partition, offset, {}, [], reason, "Unavailable"))

    def deliver(self, data: bytes) -> None:
        message: Any = messages.decode(data)
        if isinstance(message, Appended):
            waiter = self._waiters.get(message.request)
            if waiter is not None:
                if waiter.durable_only:  # no Completed follows for Ack.APPEND
                    del self._waiters[message.request]
                waiter.on_appended(message)
        elif isinstance(message, Completed):
            waiter = self._waiters.pop(message.request, None)
            if waiter is not None:
                waiter.on_completed(message)
