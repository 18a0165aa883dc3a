"""Invocations that await: what the engine asks of its host to run an `async def` handler or step.

The engine imports no concurrency, so it never runs an event loop. The engine asks its host
to run an attempt (`AwaitHost.spawn`); when the attempt begins, the host calls the engine's
`start` under the task's turn, which calls the `async def` handler (that only creates its
coroutine) and returns it wrapped; the host drives it on an event loop and, when it finishes,
calls `done` under the turn (no round runs meanwhile), then wakes the task. The engine adds the
outcome to the coming round, like a sync invocation's.

Between two awaits a coroutine runs the handler's code, which reads and writes PStates: each
step of it (`Stepped`) runs inside `around`, which points the task's views at that invocation's
Txn, and inside the host's own guard (the task's turn), so a step never overlaps a round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["AWAIT_TIMEOUT_S_DEFAULT", "AWAIT_TIMEOUT_S_MAX", "MAX_AWAITING_DEFAULT", "MAX_AWAITING_MAX", "AwaitHost",
           "Stepped"]

MAX_AWAITING_DEFAULT = 64  # invocations of one topology awaiting at once on one task
MAX_AWAITING_MAX = 10_000  # the most a topology may ask for: each holds its Txn and record in memory
AWAIT_TIMEOUT_S_DEFAULT = 60.0  # an invocation still awaiting after this fails (then retry=, dead letter)
AWAIT_TIMEOUT_S_MAX = 3_600.0


class AwaitHost(Protocol):
    """What a host gives a task that runs `async def` handlers."""

    def spawn(self, start: Callable[[], Awaitable[Any]], *, delay_s: float, timeout_s: float,
              done: Callable[[Any, BaseException | None], None]) -> None:
        """After `delay_s`, call `start()` under the task's turn and await what it returns; at most
        `timeout_s` later call `done(result, None)` or `done(None, error)` (what `start` or the
        awaitable raised, or a `TimeoutError` when the time ran out) under the task's turn, then
        wake the task for a round. Neither is called once the task has stopped."""


class Stepped:
    """An awaitable that runs each step of `awaitable` inside `around` (a reusable context manager).

    Whatever the inner coroutine yields to the event loop passes through unchanged, and whatever
    the loop sends or throws back goes to it, so any event loop drives it as it would drive the
    coroutine itself.
    """

    __slots__ = ("_around", "_awaitable")

    def __init__(self, awaitable: Awaitable[Any], around: AbstractContextManager[Any]) -> None:
        self._awaitable = awaitable
        self._around = around

    def __await__(self) -> Generator[Any, Any, Any]:
        inner: Any = self._awaitable.__await__()
        around = self._around
        value: Any = None
        error: BaseException | None = None
        while True:
            with around:
                try:
                    yielded = inner.send(value) if error is None else inner.throw(error)
                except StopIteration as stop:
                    return stop.value
            try:
                value, error = (yield yielded), None
            except BaseException as e:  # cancellation, a timeout: the inner coroutine hears it
                value, error = None, e
