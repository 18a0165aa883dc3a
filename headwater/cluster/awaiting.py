"""The event loop that runs the awaits of `async def` handlers and steps, one per process.

A task's `TaskThread` is the engine's `AwaitHost`: it hands each awaiting invocation to this
loop, wrapped so that every step of the coroutine (the handler's code between two awaits, which
reads and writes the task's PStates) runs under the task's turn, like a round. The loop's thread
only waits for I/O and for turns; the task thread never waits for the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any

__all__ = ["AwaitLoop"]


class AwaitLoop:
    """An asyncio event loop on a daemon thread of its own, started on first use."""

    _shared: AwaitLoop | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="headwater-awaits")
        self._thread.start()

    @classmethod
    def shared(cls) -> AwaitLoop:
        """This process's loop (every task of the process awaits on it)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)


async def within(awaitable: Awaitable[Any], timeout_s: float) -> Any:
    """Await `awaitable` for at most `timeout_s` (then a `TimeoutError` that says so)."""
    timeout = asyncio.timeout(timeout_s)
    try:
        async with timeout:
            return await awaitable
    except TimeoutError as e:
        if timeout.expired():
            raise TimeoutError(f"the invocation was still awaiting after {timeout_s:g} s (await_timeout_s=)") from e
        raise
