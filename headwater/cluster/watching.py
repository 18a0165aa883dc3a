"""Watches: the subscriptions of one deployment, fed by the write batches its tasks commit.

Each task's store is wrapped in a `WatchedStore`, which, after every write, hands the keys the
batch touched in the `pstate` column family to the deployment's `Hub` (a list append on the
writing thread, nothing more). The hub's own thread matches them against the watched regions —
the key of the node a watched path leads to, and everything below it — reads each touched watch's
value from committed state once, computes the diffs from its previous value, and delivers them
to every subscription of that path. So a write pays nothing per subscription, one read serves
every subscriber of a path, and a slow subscriber is resynced by its own bounded queue.

A depot partition's end offset is watched the same way, under the name `depot_watch(depot)` (a
PState name is an identifier, so it never has the colon): its region is the partition's records
in the `depot` column family, and its value the offset the next append there gets. The depot
tail socket wakes on it and reads the new records from committed state.
"""

from __future__ import annotations

import bisect
import collections
import copy
import functools
import itertools
import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

from headwater.client.subscriptions import DEPOT_WATCH, Subscription
from headwater.cluster.wire import WatchDiffs
from headwater.engine.meta import depot_key
from headwater.engine.query import ABSENT
from headwater.errors import NotFound, Unavailable
from headwater.pstate.diffs import Diff, Resync, diff
from headwater.pstate.diffs import apply as apply_diff
from headwater.pstate.txn import prefix_end
from headwater.storage import Batch, Reader, Store

__all__ = ["SUBSCRIPTIONS_MAX", "TOUCHED_BATCHES_MAX", "WATCH_FRAMES_MAX", "Hub", "RemoteWatches", "WatchedStore"]

SUBSCRIPTIONS_MAX = 10_000  # subscriptions one deployment serves at once
TOUCHED_BATCHES_MAX = 4_096  # write batches the hub has not matched yet; beyond, every watch resyncs
HUB_JOIN_S = 5.0  # the longest closing waits for the hub's thread
_log = logging.getLogger("headwater.watch")


class _Watch:
    """One watched path of one task (or one depot partition's end), shared by its subscriptions."""

    __slots__ = ("family", "key", "pstate", "region", "steps", "subscriptions", "task", "value")

    def __init__(self, task: int, pstate: str, steps: tuple) -> None:
        self.task, self.pstate, self.steps = task, pstate, steps
        self.family = "depot" if pstate.startswith(DEPOT_WATCH) else "pstate"  # the column family it reads
        self.key = (task, pstate, steps)
        self.region: tuple[bytes, bytes, bytes] = (b"", b"", b"")  # (node key, below from, below to)
        self.subscriptions: list[Any] = []  # Subscriptions, or forwarders to another process
        self.value: Any = None


class Hub:
    """The watches of one deployment, and the thread that turns its tasks' writes into diffs."""

    def __init__(self, deployment: Any) -> None:
        self._deployment = deployment  # its runtime and transport are looked up at each use
        self._lock = threading.Lock()
        self._watches: dict[tuple, _Watch] = {}  # (task, pstate, steps) -> its watch
        self._touched: list[tuple[int, str, list[bytes], list[tuple[bytes, bytes]]]] = []
        self._families: frozenset[str] = frozenset()  # the column families some watch reads
        self._overflowed = False
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.count = 0  # subscriptions open

    # ---- subscribing ------------------------------------------------------------------------
    def subscribe(self, task: int, pstate: str, steps: tuple, callback: Callable[[Diff, Any], None] | None,
                  label: str, *, on_commit: Callable[[list[Diff], Any], None] | None = None) -> Subscription:
        """A subscription in this process to a path of a task this deployment hosts."""
        return self.attach(task, pstate, steps,
                           lambda value: Subscription(label, value, callback, self.detach, on_commit), label)

    def attach(self, task: int, pstate: str, steps: tuple, make: Callable[[Any], Any], label: str) -> Any:
        """Watch a path for a subscriber `make(current value)` builds: anything with `deliver(diffs,
        value)` and `close()` (a `Subscription`, or one that forwards to another process)."""
        with self._lock:
            if self._closed:
                raise Unavailable(f"{label} cannot be watched: the module stopped")
            if self.count >= SUBSCRIPTIONS_MAX:
                raise Unavailable(f"{label} cannot be watched: this module already serves {SUBSCRIPTIONS_MAX:,} "
                                  "subscriptions; close some, or watch a path several readers share")
            watch = self._watches.get((task, pstate, steps))
            if watch is None:
                watch = _Watch(task, pstate, steps)
                self._locate(watch)
                watch.value = self._read(watch)
                self._watches[watch.key] = watch
                self._families = self._families | {watch.family}
            subscription = make(watch.value)
            watch.subscriptions.append(subscription)
            self.count += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="headwater-watch", daemon=True)
                self._thread.start()
        return subscription

    def detach(self, subscription: Any) -> None:
        with self._lock:
            for key, watch in list(self._watches.items()):
                if subscription in watch.subscriptions:
                    watch.subscriptions.remove(subscription)
                    self.count -= 1
                    if not watch.subscriptions:
                        del self._watches[key]
            self._families = frozenset(watch.family for watch in self._watches.values())

    def release_task(self, task: int) -> list[tuple[Any, str, tuple]]:
        """Task `task` is no longer led here: stop watching its paths, and hand back each of their
        subscribers with its path, (subscriber, pstate, steps), for whoever serves them next."""
        released: list[tuple[Any, str, tuple]] = []
        with self._lock:
            for key, watch in list(self._watches.items()):
                if watch.task != task:
                    continue
                del self._watches[key]
                self.count -= len(watch.subscriptions)
                released.extend((subscriber, watch.pstate, watch.steps) for subscriber in watch.subscriptions)
        return released

    # ---- from the tasks' stores -------------------------------------------------------------
    def touched(self, task: int, batch: Batch) -> None:
        """A batch of task `task` was written: note its keys in the watched column families (on the
        writer's thread: cheap)."""
        families = self._families
        if not families:
            return
        noted = []
        for watched in families:
            keys = [key for family, key, _ in batch.operations if family == watched]
            ranges = [(start, stop) for family, start, stop in batch.range_deletions if family == watched]
            if keys or ranges:
                noted.append((task, watched, keys, ranges))
        if not noted:
            return
        with self._lock:
            if len(self._touched) + len(noted) > TOUCHED_BATCHES_MAX:
                self._overflowed = True
                self._touched.clear()
            else:
                self._touched.extend(noted)
        self._wake.set()

    def resync_all(self) -> None:
        """The module was updated (its schemas or ids may differ): every watch starts again."""
        with self._lock:
            self._overflowed = True
        self._wake.set()

    # ---- the hub's thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                touched, self._touched = self._touched, []
                overflowed, self._overflowed = self._overflowed, False
                watches = list(self._watches.values())
            try:
                for watch in watches if overflowed else self._matching(watches, touched):
                    try:
                        if overflowed:
                            self._locate(watch)
                        self._publish(watch, resync=overflowed)
                    except NotFound as e:  # an update deleted what it watches: its subscriptions end
                        self._end(watch, e)
            except Unavailable:
                continue  # the module is restarting: the update's resync comes next
            except Exception:
                _log.exception("watching %s failed", self._deployment.runtime.name)

    def _end(self, watch: _Watch, error: Exception) -> None:
        """A watch that cannot go on: its subscriptions close (a reader's loop ends), the others go on."""
        _log.warning("watching %s.%s ends: %s", self._deployment.runtime.name, watch.pstate, error)
        with self._lock:
            if self._watches.get(watch.key) is watch:
                del self._watches[watch.key]
                self.count -= len(watch.subscriptions)
        for subscription in list(watch.subscriptions):
            subscription.end(f"{error}")

    def _matching(self, watches: list[_Watch], touched: list) -> list[_Watch]:
        per_task: dict[tuple[int, str], tuple[list[bytes], list[tuple[bytes, bytes]]]] = {}
        for task, family, keys, ranges in touched:
            found = per_task.setdefault((task, family), ([], []))
            found[0].extend(keys)
            found[1].extend(ranges)
        for keys, _ in per_task.values():
            keys.sort()
        matched = []
        for watch in watches:
            written = per_task.get((watch.task, watch.family))
            if written is not None and _touches(watch.region, *written):
                matched.append(watch)
        return matched

    def _publish(self, watch: _Watch, *, resync: bool) -> None:
        value = self._read(watch)
        changes: list[Diff] = [Resync(value)] if resync else diff(watch.value, value)
        watch.value = value
        if not changes:
            return
        for subscription in list(watch.subscriptions):
            subscription.deliver(changes, value)

    def _read(self, watch: _Watch) -> Any:
        deployment = self._deployment
        if watch.family == "depot":
            depot = deployment.runtime.depot(watch.pstate[len(DEPOT_WATCH):])
            return deployment.transport.read(watch.task, ("depot_bounds", depot.depot_id))[1]
        found = deployment.transport.read(watch.task, ("pstate", watch.pstate, watch.steps, "get", (ABSENT,), {}))
        return None if found is ABSENT else found

    def _locate(self, watch: _Watch) -> None:
        """Where the watched path is stored: its node's key, and the region below the node (for a
        depot partition: its records)."""
        if watch.family == "depot":
            depot_id = self._deployment.runtime.depot(watch.pstate[len(DEPOT_WATCH):]).depot_id
            start = depot_key(depot_id, 0)
            watch.region = (start, start, depot_key(depot_id + 1, 0))
            return
        layout = self._deployment.runtime.pstate(watch.pstate).layout
        target = layout.locate(_NO_READS, watch.steps)
        location = target.location
        watch.region = (location.key, location.base, prefix_end(location.base))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            subscriptions = [s for watch in self._watches.values() for s in watch.subscriptions]
            self._watches.clear()
        self._wake.set()
        for subscription in subscriptions:
            subscription.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(HUB_JOIN_S)


WATCH_RETRY_S = 0.5  # how soon a watch is made again after its worker could not be reached
WATCH_FRAMES_MAX = 10_000  # diff frames received and not yet delivered; beyond, the watch is read again


class RemoteWatches:
    """The subscriptions of a deployment in this process to paths of tasks led in other processes.

    The worker leading a task sends each commit's diffs (`WatchDiffs`); they arrive on a link's
    reader thread, which only queues them: a thread of this deployment applies them to the
    subscription's value and delivers them, so a slow callback never holds up a link. When the
    task moves (a restart, a failover, an update), the watch is made again where it runs, and its
    subscription gets a `Resync`."""

    def __init__(self, deployment: Any) -> None:
        # `deployment` has `watch_on(task, pstate, steps, watch_id) -> value` and `unwatch_on(task, watch_id)`.
        self._deployment = deployment
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._watches: dict[int, tuple[Subscription, int, str, tuple]] = {}  # id -> (subscription, task, pstate, steps)
        self._frames: collections.deque[WatchDiffs] = collections.deque()
        self._stale: set[int] = set()  # watches whose frames were dropped: read again
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, task: int, pstate: str, steps: tuple, callback: Any, label: str, on_commit: Any) -> Subscription:
        watch_id = next(self._ids)
        subscription = Subscription(label, None, callback, functools.partial(self._closed_by_reader, watch_id),
                                    on_commit)
        with self._lock:
            if len(self._watches) >= SUBSCRIPTIONS_MAX:
                raise Unavailable(f"{label} cannot be watched: this module already serves {SUBSCRIPTIONS_MAX:,} "
                                  "subscriptions; close some")
            self._watches[watch_id] = (subscription, task, pstate, steps)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="headwater-watch-remote", daemon=True)
                self._thread.start()
        try:
            subscription.start(self._deployment.watch_on(task, pstate, steps, watch_id))
        except BaseException:
            with self._lock:
                self._watches.pop(watch_id, None)
            raise
        return subscription

    def adopt(self, subscription: Subscription, task: int, pstate: str, steps: tuple) -> None:
        """Serve `subscription`, which watched `task` where it ran before, from where it runs now:
        it gets a `Resync` with the value there, as after any move."""
        watch_id = next(self._ids)
        subscription.rehome(functools.partial(self._closed_by_reader, watch_id))
        with self._lock:
            self._watches[watch_id] = (subscription, task, pstate, steps)
            self._stale.add(watch_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="headwater-watch-remote", daemon=True)
                self._thread.start()
        self._wake.set()

    def _closed_by_reader(self, watch_id: int, subscription: Subscription) -> None:
        self._unwatch(watch_id)

    def _unwatch(self, watch_id: int) -> None:
        with self._lock:
            found = self._watches.pop(watch_id, None)
        if found is not None:
            self._deployment.unwatch_on(found[1], watch_id)

    def received(self, envelope: WatchDiffs) -> None:
        with self._lock:
            if len(self._frames) >= WATCH_FRAMES_MAX:
                self._stale.update(frame.watch for frame in self._frames)
                self._frames.clear()
                self._stale.add(envelope.watch)
            else:
                self._frames.append(envelope)
        self._wake.set()

    def again(self, tasks: set[int] | None) -> None:
        """The watches of `tasks` (None: all) are made again where those tasks run now."""
        with self._lock:
            self._stale.update(i for i, (_, task, _, _) in self._watches.items() if tasks is None or task in tasks)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(WATCH_RETRY_S if self._stale else None)  # a watch whose worker is restarting
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                frames, self._frames = self._frames, collections.deque()
                stale, self._stale = self._stale, set()
                watches = dict(self._watches)
            for watch_id in stale:
                if watch_id in watches:
                    self._resync(watch_id, *watches[watch_id])
            for frame in frames:
                found = watches.get(frame.watch)
                if found is None or frame.watch in stale:
                    continue
                subscription = found[0]
                # A new value object per commit, as in process: a reader holding the previous one
                # (to apply the diffs to it itself) must not see it change.
                value = copy.deepcopy(subscription.value)
                for change in pickle.loads(frame.diffs):  # values of their own: the reader's stay as sent
                    value = apply_diff(value, change)
                subscription.deliver(pickle.loads(frame.diffs), value)

    def _resync(self, watch_id: int, subscription: Subscription, task: int, pstate: str, steps: tuple) -> None:
        try:
            value = self._deployment.watch_on(task, pstate, steps, watch_id)
        except Unavailable:
            with self._lock:
                self._stale.add(watch_id)  # its worker is restarting: try again when it is back
            return
        except NotFound as e:  # an update deleted what it watches: it ends
            _log.warning("watching %s ends: %s", subscription.label, e)
            with self._lock:
                self._watches.pop(watch_id, None)
            subscription.end(f"{e}")
            return
        subscription.deliver([Resync(value)], value)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            subscriptions = [found[0] for found in self._watches.values()]
            self._watches.clear()
        self._wake.set()
        for subscription in subscriptions:
            subscription.close()


def _touches(region: tuple[bytes, bytes, bytes], keys: list[bytes], ranges: list[tuple[bytes, bytes]]) -> bool:
    """Whether sorted `keys` or the deleted `ranges` reach the node key or the region below it."""
    node, low, high = region
    at = bisect.bisect_left(keys, node)
    if at < len(keys) and keys[at] == node:
        return True
    at = bisect.bisect_left(keys, low)
    if at < len(keys) and keys[at] < high:
        return True
    return any(start <= node < stop or (start < high and low < stop) for start, stop in ranges)


class _NoReads:
    """Locating a path reads nothing for the steps a watch can have (keys, fields, indexes); a
    path that would need a read (a negative list index) is watched where it starts."""

    def get(self, key: bytes) -> bytes | None:
        return None

    def iterate(self, start: bytes, stop: bytes | None = None, *, reverse: bool = False) -> Any:
        return iter(())


_NO_READS = _NoReads()


class WatchedStore(Store):
    """A task's store that tells the hub what each write touched, after it is written."""

    def __init__(self, store: Store, hub: Hub, task: int) -> None:
        self._store, self._hub, self._task = store, hub, task

    def reader(self, column_family: str) -> Reader:
        return self._store.reader(column_family)

    def write(self, batch: Batch, *, sync: bool) -> None:
        self._store.write(batch, sync=sync)
        self._hub.touched(self._task, batch)

    def sync(self) -> None:
        self._store.sync()

    def close(self) -> None:
        self._store.close()

    def compact(self, column_family: str, start: bytes, stop: bytes) -> None:
        self._store.compact(column_family, start, stop)

    def get(self, column_family: str, key: bytes) -> bytes | None:
        return self._store.get(column_family, key)

    def iterate(self, column_family: str, start: bytes, stop: bytes | None = None, *,
                reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        return self._store.iterate(column_family, start, stop, reverse=reverse)

    def __getattr__(self, name: str) -> Any:  # what a RocksStore has beyond the port (checkpoints)
        return getattr(self._store, name)
