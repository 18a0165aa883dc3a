"""Sync a store's write-ahead log on a thread of its own.

The task writes a group of appends, starts the sync, processes the group while the disk works,
and waits for the sync only before it tells anyone: latency is the longer of the two, not the
sum. Nothing leaves the task — acks, replies, hops — before the sync returns.
"""

from __future__ import annotations

import threading

from headwater.storage.base import Store

__all__ = ["WalSyncer"]


class WalSyncer:
    def __init__(self, store: Store, *, name: str) -> None:
        self._store = store
        # Two bare locks hand the turn back and forth: cheaper than queues or futures per sync.
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._busy = False
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._go.acquire()
            if self._stopping:
                return
            try:
                self._store.sync()
            except BaseException as e:  # handed to the task at wait(), which fails loudly
                self._error = e
            self._done.release()

    @property
    def busy(self) -> bool:
        return self._busy

    def start(self) -> None:
        """Begin syncing everything written so far; one sync runs at a time."""
        self.wait()
        self._busy = True
        self._go.release()

    def poll(self) -> bool:
        """True once the sync started last is done (never waits)."""
        if self._busy and self._done.acquire(blocking=False):
            self._busy = False
            if self._error is not None:
                error, self._error = self._error, None
                raise error
        return not self._busy

    def wait(self) -> None:
        """Return once the sync started last is done (at once if none is running)."""
        if not self._busy:
            return
        self._done.acquire()
        self._busy = False
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def stop(self) -> None:
        self.wait()
        self._stopping = True
        self._go.release()
        self._thread.join(5)
