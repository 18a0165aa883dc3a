"""Hosts: what drives a passive task core. A `TaskThread` runs one task on a thread of this process.

The engine's `Task` only handles the messages it is given and says what it needs next
(`RoundOutcome`); the host owns the thread, the lock that serializes rounds, the inbox and the
clock. A full-ack appender in the same process that would only wait may run the round on its
own thread (`run_round_here`, flat combining), which skips two hand-offs of the interpreter lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from headwater.cluster.awaiting import AwaitLoop, within
from headwater.cluster.pollers import POLLER_STOP_WAIT_S, Poller
from headwater.cluster.transport import Inbox
from headwater.engine import messages
from headwater.engine.awaits import Stepped
from headwater.engine.messages import Stop
from headwater.engine.task import INBOX_DRAIN_MAX, Task
from headwater.errors import ResourceError

__all__ = ["RESOURCE_CLOSE_WAIT_MAX_S", "RESOURCE_RETRY_MAX_S", "SYSTEM_CLOCK", "SystemClock", "TaskThread",
           "open_resources", "stop_hosts"]

_log = logging.getLogger("headwater.task")

# An appender runs a round itself only if its timeout is this many times the slowest recent round.
ROUND_TIMEOUT_SHARE = 10
SLOW_ROUND_DECAY = 0.95  # per round
CONGESTED_POLL_S = 0.005  # how soon a task whose receivers were congested looks again
BACKGROUND_PAUSE_S = 0.0005  # between rounds of background work (a migration), unless a message comes
STOP_WAIT_MAX_S = 10.0  # how long `stop` waits for the round in progress to end
RESOURCE_CLOSE_WAIT_MAX_S = 5.0  # how long stopping tasks waits for their resources' close() calls, all together
RESOURCE_RETRY_FIRST_S = 0.5  # after a restart, a task whose resource factory raised tries again after this...
RESOURCE_RETRY_MAX_S = 30.0  # ... doubling each time up to this


class SystemClock:
    """The engine's `Clock` on this machine's clocks."""

    @staticmethod
    def time_us() -> int:
        return time.time_ns() // 1000

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)


SYSTEM_CLOCK = SystemClock()


class TaskThread:
    """Runs a task's rounds one at a time: on its own thread, or on a waiting appender's."""

    def __init__(self, task: Task, inbox: Inbox, *,
                 on_failure: Callable[[TaskThread, BaseException], None] | None = None,
                 batching: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext) -> None:
        self.task = task
        self.inbox = inbox
        self._batching = batching  # what a round sends to other processes leaves in one write per link
        self._on_failure = on_failure  # told when a round fails (a worker tells its supervisor)
        # Whoever runs a round holds the turn: the task thread, or a full-ack appender.
        self._turn = threading.Lock()
        self._stopping = False
        self._backlog = True  # the last round left records or replays to process
        self._congested = False
        self._background = False  # the last round left background work (a migration) to do
        self._wake_in_s: float | None = None  # the last round asked for another within this long
        self._slow_round_s = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"headwater-{task.runtime.name}-task-{task.task_id}")
        self.failure: BaseException | None = None
        self._ready = False  # resources built and the first round run: rounds may run
        self._stop_asked = threading.Event()  # wakes a task waiting to retry its resources
        self._closer: threading.Thread | None = None
        self._pollers: dict[tuple[int, int], Poller] = {}  # per external depot partition: its source's reader
        # Invocations of async handlers awaiting on this process's AwaitLoop (cancelled at stop).
        self._awaits: set[concurrent.futures.Future[Any]] = set()
        self._awaits_lock = threading.Lock()
        self._held = False  # the task holds messages it took (hops waiting for an async slot)
        task.await_with(self)

    def open_resources(self) -> ResourceError | None:
        """Build the task's resources now (before `start`); the error if a factory raised."""
        try:
            self.task.resources.open()
        except ResourceError as e:
            return e
        return None

    def start(self) -> None:
        self.task.recover()
        self._thread.start()

    def stop(self, timeout_s: float = STOP_WAIT_MAX_S) -> None:
        """Stop running rounds, then start closing the task's resources (`wait_closed` bounds that)."""
        self._stop_asked.set()
        for poller in list(self._pollers.values()):
            poller.stop()
        self.inbox.put(messages.encode(Stop()))
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join(timeout_s)
        deadline = time.monotonic() + POLLER_STOP_WAIT_S
        for poller in list(self._pollers.values()):
            poller.join(deadline)
        self._cancel_awaits()
        self.task.close()
        # A close() is user code that may hang on a dead server: it runs on a thread of its own,
        # so that stopping every task waits for all of them together, and at most a bound.
        self._closer = threading.Thread(target=self.task.resources.close, daemon=True,
                                        name=f"headwater-{self.task.runtime.name}-close-{self.task.task_id}")
        self._closer.start()

    # ---- the engine's AwaitHost ------------------------------------------------------------
    def spawn(self, start: Callable[[], Awaitable[Any]], *, delay_s: float, timeout_s: float,
              done: Callable[[Any, BaseException | None], None]) -> None:
        """Await on the process's loop, each step under the turn; `done` under the turn, then a round."""
        future = AwaitLoop.shared().submit(self._await(start, delay_s, timeout_s, done))
        with self._awaits_lock:
            self._awaits.add(future)
        future.add_done_callback(self._awaited)

    async def _await(self, start: Callable[[], Awaitable[Any]], delay_s: float, timeout_s: float,
                     done: Callable[[Any, BaseException | None], None]) -> None:
        result: Any = None
        error: BaseException | None = None
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        try:
            with self._turn:
                if not self._live:
                    return
                awaitable = start()
            result = await within(Stepped(awaitable, self._turn), timeout_s)
        except asyncio.CancelledError as e:
            if not self._live:
                raise  # the task stopped (`_cancel_awaits`)
            error = e  # the handler's code cancelled itself: a failure like another, or its slot would never free
        except Exception as e:  # the handler's failure: the engine retries it or dead-letters it
            error = e
        with self._turn:  # blocks this loop only while a round runs; rounds never wait for the loop
            if not self._live:
                return  # stopped: the record runs again when the task is next started
            done(result, error)
        self.inbox.poke()

    def _awaited(self, future: concurrent.futures.Future[Any]) -> None:
        with self._awaits_lock:
            self._awaits.discard(future)
        error = None if future.cancelled() else future.exception()
        if error is not None:
            self._failed(error)  # a bug of the engine's in `done`

    def _cancel_awaits(self) -> None:
        with self._awaits_lock:
            awaiting = list(self._awaits)
        for future in awaiting:
            future.cancel()

    def wait_closed(self, deadline: float) -> bool:
        """Wait until the resources are closed or `deadline` (time.monotonic) passes; False if not closed."""
        if self._closer is None:
            return True
        self._closer.join(max(0.0, deadline - time.monotonic()))
        return not self._closer.is_alive()

    def pause(self, timeout_s: float) -> bool:
        """Take the turn, waiting at most `timeout_s` for the round in progress: until `resume`, no
        round, await step or appender's round runs (messages queue in the inbox). False if not taken.

        A backup holds every task so, all at once, to take its stores at one cut."""
        return self._turn.acquire(timeout=max(0.0, timeout_s))

    def resume(self) -> None:
        """Give back the turn `pause` took (from any thread), and wake the task for what queued meanwhile."""
        self._turn.release()
        self.inbox.poke()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def _live(self) -> bool:
        """Rounds may still run: no Stop was taken and no round failed."""
        return not self._stopping and self.failure is None

    def _await_resources(self) -> bool:
        """Build the resources `open_resources` did not (after a worker restart), retrying with a
        back-off while a factory raises: the task runs no handler without them. False: stopped."""
        resources = self.task.resources
        while not resources.ready:
            if self._stop_asked.is_set():
                return False
            try:
                resources.open()
            except ResourceError:
                delay_s = min(RESOURCE_RETRY_MAX_S, RESOURCE_RETRY_FIRST_S * 2 ** (resources.attempts - 1))
                self._stop_asked.wait(delay_s)
        return True

    def _run(self) -> None:
        try:
            if not self._await_resources():
                return
            with self._turn, self._batching():
                self.task.begin()
                self._ready = True
                self._poll()
            while self._live:
                if self._congested:  # look again soon: room frees up as the receivers drain
                    self.inbox.wait(CONGESTED_POLL_S)
                elif self._background and not self._backlog:  # other threads' turn first
                    self.inbox.wait(BACKGROUND_PAUSE_S)
                elif not self._backlog:
                    self.inbox.wait(self._wake_in_s)
                with self._turn:
                    if self._live:
                        self._round()
        except BaseException as e:  # an engine bug: record it so clients fail loudly instead of hanging
            self._failed(e)

    def run_round_here(self, timeout_s: float) -> None:
        """Run one round on the calling thread if no round is running (flat combining).

        Called for a full-ack appender that would otherwise only wait up to `timeout_s` (its
        append is already in the inbox). Rounds are serialized by `_turn` whichever thread runs
        them, and the messages are taken under it, so a task's state still changes one round at
        a time and in arrival order. Otherwise the task thread is woken to take the append: when
        a round is running (it may have taken its messages already), and when recent rounds were
        slow enough that running one could hold the appender past its timeout.
        """
        if (not self._ready or self._slow_round_s * ROUND_TIMEOUT_SHARE > timeout_s
                or not self._turn.acquire(blocking=False)):
            self.inbox.poke()
            return
        try:
            if self._live:
                self._round()
                if self._backlog or self._background or self._stopping:
                    self.inbox.poke()  # the task thread carries on (or stops)
        except BaseException as e:
            self._failed(e)
        finally:
            self._turn.release()

    def _round(self) -> None:
        started = time.monotonic()
        with self._batching():
            outcome = self.task.run_round(self.inbox.take(INBOX_DRAIN_MAX), self.inbox.waiting)
        if outcome.held_bytes or self._held:
            self.inbox.hold(outcome.held_bytes)
            self._held = bool(outcome.held_bytes)
        self._poll()
        self._stopping = self._stopping or outcome.stopping
        self._backlog, self._congested, self._background = outcome.backlog, outcome.congested, outcome.background
        self._wake_in_s = outcome.wake_in_s
        # The slowest recent round: a decaying maximum, so one slow handler turns combining off for a while.
        self._slow_round_s = max(time.monotonic() - started, self._slow_round_s * SLOW_ROUND_DECAY)

    def _poll(self) -> None:
        """Hand the reads of external sources the task asked for to their pollers (made on first use)."""
        for request in self.task.take_polls():
            key = (request.depot.depot_id, request.partition)
            poller = self._pollers.get(key)
            if poller is None:
                if self._stop_asked.is_set():
                    return
                poller = self._pollers[key] = Poller(
                    request, self.inbox.put,
                    f"headwater-{self.task.runtime.name}-{request.depot.name}-{request.partition}",
                    self.task.transport.peers)
            poller.ask(request.after, lag_only=request.lag_only)

    def _failed(self, error: BaseException) -> None:
        self.failure = error
        self.inbox.poke()  # the task thread, if a round elsewhere failed, stops too
        _log.error("task %s of module %s stopped on an internal error", self.task.task_id, self.task.runtime.name,
                   exc_info=error)
        if self._on_failure is not None:
            self._on_failure(self, error)


def open_resources(hosts: list[TaskThread]) -> ResourceError | None:
    """Build every task's resources before any task starts (a deploy or an update); the error of
    the first factory that raises (the caller then stops the hosts, which closes what was built)."""
    for host in hosts:
        error = host.open_resources()
        if error is not None:
            return error
    return None


def stop_hosts(hosts: list[TaskThread]) -> None:
    """Stop every task, then wait for their resources to close, all together and at most
    RESOURCE_CLOSE_WAIT_MAX_S: a close that hangs (a dead server) goes on in the background."""
    for host in hosts:
        host.stop()
    wait_max_s = RESOURCE_CLOSE_WAIT_MAX_S
    deadline = time.monotonic() + wait_max_s
    slow = [host.task.task_id for host in hosts if not host.wait_closed(deadline)]
    if slow:
        _log.warning("the resources of task(s) %s of module %s did not close within %ss; they go on closing "
                     "in the background", slow, hosts[0].task.runtime.name, wait_max_s)
