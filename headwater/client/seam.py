"""What the client classes need from a deployed module, whatever hosts its tasks.

`DepotClient`, the PState views, queries and `DeadLetter` hold a `DeployedModule` and talk to
its tasks only through its `ClientTransport` and `ReplyRouter`. The clusters in
`headwater.cluster` implement both; nothing here imports them, so the client layer never
depends on a host.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

from headwater.client.replies import ReplyRouter, Waiter
from headwater.engine import messages
from headwater.engine.messages import Ping, Pong
from headwater.engine.runtime import ModuleRuntime
from headwater.engine.transport import Transport
from headwater.errors import Unavailable

__all__ = ["ClientTransport", "DeployedModule", "WouldWait", "check_may_wait", "without_waiting"]

_here = threading.local()


class WouldWait(Exception):
    """Raised by a transport asked, under `without_waiting`, for what needs another process."""


@contextmanager
def without_waiting() -> Iterator[None]:
    """Reads inside may only be served in this process: one that needs another process raises
    `WouldWait` at once. An event loop reads this way and hands what raised to a thread."""
    _here.no_wait = True
    try:
        yield
    finally:
        _here.no_wait = False


def check_may_wait() -> None:
    """Called by a transport before it waits on another process."""
    if getattr(_here, "no_wait", False):
        raise WouldWait


class ClientTransport(Transport):
    """The transport a deployment's clients use, in the process that holds them."""

    closed: bool  # set when the module stops: every later call raises Unavailable

    @abstractmethod
    def submit_append(self, task_id: int, message: bytes, *, caller_waits: bool = False,
                      timeout_s: float = 0.0) -> None:
        """Deliver a client append (`AppendRecord` or `AppendBatch`) to its task, which appends it or
        answers Busy.

        `caller_waits`: the caller will do nothing but wait, up to `timeout_s`, for this append's
        processing. A transport whose tasks run in the caller's process may run the task's round
        on the caller's thread meanwhile (`TaskThread.run_round_here`); others ignore it.
        """

    @abstractmethod
    def abandon_reads(self, thread_id: int) -> None:
        """The query running on `thread_id` was given up (timed out): it no longer holds commits off."""


class DeployedModule(ABC):
    """One running module as its clients see it. The object outlives `cluster.update`: clients
    find the current runtime and transport on it, so their handles keep working across updates."""

    closed: bool  # the module was stopped or destroyed
    runtime: ModuleRuntime  # its compiled definition
    transport: ClientTransport
    router: ReplyRouter  # hands replies to the waiting clients
    client_id: int  # the address tasks reply to
    failures: dict[int, str]  # task -> the internal error it stopped on, as its host reported it

    def check_open(self) -> None:
        """Raise Unavailable unless the module's tasks can take requests."""
        if self.closed:
            raise Unavailable(f"module {self.runtime.name!r} is {self._gone()}")
        if self.failures:
            task, error = next(iter(self.failures.items()))
            raise Unavailable(f"task {task} of module {self.runtime.name!r} stopped on an internal error: {error}; "
                              "restart the cluster (it resumes from disk)")

    @abstractmethod
    def _gone(self) -> str:
        """Where the module no longer runs, for the error of a call after it stopped."""

    def ping(self) -> list[Waiter | None]:
        """Ask every task whether it runs rounds (`Ping`); collect the answers with `answers`."""
        waiters: list[Waiter | None] = []
        for task in range(self.runtime.tasks):
            waiter = Waiter(-1)
            request = self.router.register(waiter)
            try:
                self.transport.send(task, messages.encode(Ping(self.client_id, request)))
            except Unavailable:  # its worker is down or restarting: no answer will come
                self.router.forget(request)
                waiters.append(None)
            else:
                waiters.append(waiter)
        return waiters

    def answers(self, waiters: list[Waiter | None], deadline: float) -> list[Pong | None]:
        """Each task's `Pong`, or None if it did not answer by `deadline` (time.monotonic)."""
        answers: list[Pong | None] = []
        for waiter in waiters:
            if waiter is not None and not waiter.wait_done(deadline - time.monotonic()):
                self.router.forget(waiter.request)
            answers.append(waiter.pong if waiter is not None else None)
        return answers
