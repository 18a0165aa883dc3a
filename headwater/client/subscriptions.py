"""`hw.Subscription`: a watched PState path, its current value, and the diffs of each commit.

`view.watch()` returns one. The cluster reads the watched value when a committed write batch
touches it and sends each subscription the diffs from its previous value (`hw.diffs`), all the
diffs of one batch together. A subscription keeps at most `SUBSCRIPTION_QUEUE_MAX` diffs its
reader has not taken; past that it drops them and its next diff is a `Resync` with the value
then current, so a slow reader costs bounded memory and never slows a writer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from headwater.pstate.diffs import Diff, Resync

__all__ = ["DEPOT_WATCH", "SUBSCRIPTION_QUEUE_MAX", "Subscription", "depot_watch"]

SUBSCRIPTION_QUEUE_MAX = 10_000  # diffs a subscription holds for its reader; beyond, it resyncs
DEPOT_WATCH = "depot:"  # the watched name of a depot partition's end offset: DEPOT_WATCH + the depot's name


def depot_watch(depot: str) -> str:
    """The name under which a depot's partitions are watched (each task holds one partition of it;
    no PState name has a colon)."""
    return DEPOT_WATCH + depot
_log = logging.getLogger("headwater.watch")


class Subscription:
    """A watched PState path: `.value`, its diffs in commit order, and `close()`.

        with cluster.pstate("game", "scores")["room-1"].watch() as sub:
            sub.value                       # the current value at the path
            for change in sub:              # blocks; `async for` in asyncio
                print(change, sub.value)    # e.g. Put(path=('alice',), value=12)

        cluster.pstate("game", "scores")["room-1"].watch(callback=fn)   # fn(diff, value), on a
        # background thread that delivers every subscription's diffs: keep it short
        cluster.pstate("game", "scores")["room-1"].watch(on_commit=fn)  # fn(diffs, value): a commit's together

    `.value` is the value after the latest delivered commit; treat it as read-only (it is shared
    by the subscriptions of one path). Iterating yields each diff once; a `Resync(value)` says
    that diffs were dropped (the reader fell more than SUBSCRIPTION_QUEUE_MAX behind, or the
    module was updated) and replaces the value whole. Iteration ends when the subscription closes:
    by `close()`, or by the cluster when an update deletes what it watches, and then `ended` says
    why (it is None otherwise).
    """

    def __init__(self, label: str, value: Any, callback: Callable[[Diff, Any], None] | None,
                 on_close: Callable[[Subscription], None],
                 on_commit: Callable[[list[Diff], Any], None] | None = None) -> None:
        self.label = label
        self._value = value
        self._callback = callback
        self._on_commit = on_commit
        self._on_close = on_close
        self._queue: deque[Diff] = deque()
        self._resync = False  # the queue overflowed: the next diff the reader takes is a Resync
        self._ready = threading.Condition()
        self.closed = False
        self.ended: str | None = None  # why the cluster ended it (what it watched was deleted)
        self._on_end: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.label}{' closed' if self.closed else ''}>"

    @property
    def value(self) -> Any:
        """The watched value after the latest commit delivered to this subscription."""
        return self._value

    # ---- from the cluster -------------------------------------------------------------------
    def start(self, value: Any) -> None:
        """The value when the watch began (a subscription made before its first read)."""
        self._value = value

    def rehome(self, on_close: Callable[[Subscription], None]) -> None:
        """Its diffs come from elsewhere now (its task moved to another process): `on_close` ends that."""
        self._on_close = on_close

    def deliver(self, diffs: list[Diff], value: Any) -> None:
        """One commit's diffs (or one Resync), and the value after them."""
        if self.closed:
            return
        if self._on_commit is not None:
            self._value = value
            try:
                self._on_commit(diffs, value)
            except Exception:
                _log.exception("the commit callback of %s raised", self.label)
            return
        if self._callback is not None:
            self._value = value
            for change in diffs:
                try:
                    self._callback(change, value)
                except Exception:  # a subscriber's bug must not stop the others' diffs
                    _log.exception("the callback of %s raised", self.label)
            return
        with self._ready:
            self._value = value
            if self._resync or len(self._queue) + len(diffs) > SUBSCRIPTION_QUEUE_MAX:
                self._queue.clear()
                self._resync = True
            else:
                self._queue.extend(diffs)
            self._ready.notify_all()

    # ---- for the reader ----------------------------------------------------------------------
    def next(self, timeout: float | None = None) -> Diff | None:
        """The next diff, waiting up to `timeout` seconds (None: until one comes); None if the
        wait ran out or the subscription closed."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._queue or self._resync or self.closed, timeout):
                return None
            if self._resync:
                self._resync = False
                return Resync(self._value)
            return self._queue.popleft() if self._queue else None

    def __iter__(self) -> Iterator[Diff]:
        while True:
            change = self.next()
            if change is None:
                return
            yield change

    def __aiter__(self) -> AsyncIterator[Diff]:
        return self._iterate_async()

    async def _iterate_async(self) -> AsyncIterator[Diff]:
        while True:
            change = await asyncio.to_thread(self.next)
            if change is None:
                return
            yield change

    def end(self, reason: str) -> None:
        """The cluster ends the subscription: what it watched is gone (`reason` says what). Its
        reader's loop ends, and `ended` says why."""
        if self.closed:
            return
        self.ended = reason
        listener = self._on_end
        if listener is not None:
            try:
                listener(reason)
            except Exception:
                _log.exception("the end listener of %s raised", self.label)
        self.close()

    def when_ended(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` when the cluster ends the subscription (at once if it has)."""
        self._on_end = listener
        if self.ended is not None:
            listener(self.ended)

    def close(self) -> None:
        """Stop receiving diffs; a reader waiting in `next` or a loop over it ends."""
        if self.closed:
            return
        with self._ready:
            self.closed = True
            self._ready.notify_all()
        self._on_close(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
