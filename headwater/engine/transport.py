"""The transport seam: the only way anything crosses between tasks, or between tasks and clients.

The engine sees this interface and nothing else. `headwater.cluster` provides implementations:
in-process queues and threads now, Ray actors later. Messages are encoded bytes, so no mutable
object is ever shared between two tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Clock", "Transport", "check_message"]


def check_message(message: object) -> None:
    """Refuse, where it is handed over, anything but an encoded message: everything that crosses
    between tasks is bytes (`headwater.engine.messages.encode`), never a live object."""
    if type(message) is not bytes:
        raise TypeError(f"a message crosses the transport as bytes (headwater.engine.messages.encode), "
                        f"not {type(message).__name__}")


class Clock(Protocol):
    """The time a task may use, given by its host (so a test or a simulation can give another)."""

    def time_us(self) -> int:
        """Wall-clock microseconds since the epoch: append timestamps."""

    def monotonic(self) -> float:
        """Seconds for measuring spans (a round's time budget)."""

    def sleep(self, seconds: float) -> None:
        """Wait (a retry's back-off)."""


class Transport(ABC):
    # The clients, in the process this transport serves, of the cluster's other modules: what a
    # module's mirrors (`mirror_depot`, `mirror_pstate`, `mirror_query`) read through. Set by the host.
    peers: Any = None

    @abstractmethod
    def send(self, task_id: int, message: bytes) -> None:
        """Deliver to a task's inbox. Messages between two endpoints arrive in send order."""

    @abstractmethod
    def congested(self) -> bool:
        """Messages queued for the module's tasks are over their bound: start no new records now."""

    @abstractmethod
    def reply(self, client_id: int, message: bytes) -> None:
        """Deliver to a client endpoint."""

    @abstractmethod
    def read(self, task_id: int, request: tuple[Any, ...]) -> Any:
        """Serve a read of a task's committed state (PState paths, depot records, dead letters)."""

    @abstractmethod
    def consistent_reads(self) -> AbstractContextManager[None]:
        """Reads made inside (a query's) see no microbatch half-applied: commits wait until the block ends.

        Entering waits while a commit is applying or waiting to; nothing else ever waits for it.
        """

    @abstractmethod
    def begin_commit(self, task_id: int, wake: bytes) -> bool:
        """Start applying a microbatch commit if no consistent read is running, and hold new ones off.

        Never blocks. False: reads are running; when they end, the commit is started for the
        caller and `wake` is sent to task `task_id`.
        """

    @abstractmethod
    def end_commit(self) -> None:
        """A commit finished applying on every task: let consistent reads run again."""

    def flush(self) -> None:  # noqa: B027 (a hook: most transports hold nothing back)
        """Let what the running round sent so far leave now. A host may hold a round's sends to
        send them together when it ends; replies that must not wait for the round's processing
        (Ack.APPEND's) are flushed."""

    def read_many(self, requests: list[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        """Several reads, possibly on several tasks at once; results in request order."""
        return [self.read(task_id, request) for task_id, request in requests]
