"""The reader of a mirrored depot (`module.mirror_depot`): another module's depot, read through the
clients of the process that hosts the mirroring task.

Its host's poller asks it for what follows a position (the next offset of each upstream partition
the mirror partition copies). It reads those partitions' committed records; when there is nothing
new, it waits to be woken by the upstream's commits: it watches each partition's end offset
(`DepotClient.watch_end`, fed by the upstream's hub), so a record is read as soon as it is
committed, with no polling. While a watch cannot be made (the upstream restarting), it looks again
every `MIRROR_POLL_S`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from headwater.engine.mirrors import MirrorSource, send_progress
from headwater.engine.sources import SKIPPED, SourceReader
from headwater.errors import Unavailable
from headwater.schema import task_for_key

__all__ = ["MIRROR_POLL_S", "MIRROR_REPORT_S", "MirrorReader"]

MIRROR_POLL_S = 0.1  # with no watch of the upstream's commits (being made again), read this often
MIRROR_REPORT_S = 0.2  # a reader tells the upstream how far it copied at most this often (and on start)


class MirrorReader(SourceReader):
    """Reads the upstream partitions one mirror partition copies; the position is their next offsets."""

    def __init__(self, source: MirrorSource, peers: Any, partition: int) -> None:
        if peers is None:
            raise RuntimeError(f"{source.describe()}: this process has no clients of other modules")
        self._source = source
        self._peers = peers
        self._partition = partition
        self._upstream = source.assigned(partition)
        self._reported: tuple[list[int], float] | None = None
        self._committed = threading.Event()  # set by the upstream's commits to the watched partitions
        self._watches: list[Any] = []

    def _depot(self) -> Any:
        return self._peers.depot(self._source.upstream, self._source.depot)  # looked up anew: it survives updates

    def start(self) -> Any:
        if self._source.start_at is not None:  # fixed at the deploy that added the mirror
            return list(self._source.start_at[self._partition])
        depot = self._depot()
        infos = [depot.partition_info(p) for p in self._upstream]
        return [info.start_offset if self._source.from_beginning else info.end_offset for info in infos]

    def read(self, after: Any, *, records_max: int, wait_s: float) -> Sequence[tuple[Any, ...]]:
        start = tuple(after) if after is not None else (0,) * len(self._upstream)
        if len(start) != len(self._upstream):
            raise ValueError(f"{self._source.describe()}: the stored position {after!r} does not match the "
                             f"{len(self._upstream)} upstream partitions this partition copies")
        deadline = time.monotonic() + wait_s
        while True:
            self._committed.clear()  # before reading: a commit from now on wakes the wait below
            try:
                watching = self._watch()
                # Each try reads from the stored position: one that failed part-way (a partition's
                # task restarting) moved cursors past records it then dropped.
                rows = self._read_once(list(start), records_max)
            except Unavailable:  # the upstream restarts (an update, a worker's restart), or the cluster closes
                watching, rows = False, []
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return rows
            self._committed.wait(remaining if watching else min(remaining, MIRROR_POLL_S))

    def _watch(self) -> bool:
        """Watch the upstream partitions' end offsets (once); False while that cannot be done."""
        if self._watches and not any(watch.closed for watch in self._watches):
            return True
        self._unwatch()  # none yet, or one ended (its module stopped): made again
        depot = self._depot()
        try:
            for partition in self._upstream:
                self._watches.append(depot.watch_end(partition, lambda _diff, _value: self._committed.set()))
        except Unavailable:
            self._unwatch()
            return False
        return True

    def _read_once(self, cursors: list[int], records_max: int) -> list[tuple[Any, ...]]:
        self._report(cursors)
        depot = self._depot()
        mine = self._keeps()
        rows: list[tuple[Any, ...]] = []
        read = 0
        for i, partition in enumerate(self._upstream):
            room = records_max - read
            if room <= 0:
                break
            # Below the upstream's start only if it trimmed what this mirror had not copied: the
            # NotFound (naming the offsets) is the reader's error, shown in status(), and read again.
            records = depot.read(partition, cursors[i], limit=room)
            read += len(records)
            for record in records:
                cursors[i] = record.offset + 1
                if mine is None or mine(record.event):  # with its time: the copy keeps the upstream's
                    rows.append((list(cursors), msgspec.to_builtins(record.event), record.timestamp))
        if read and (not rows or rows[-1][0] != cursors):
            # Records of other partitions were read after the last kept one: their position is
            # stored too, so that they are not read again.
            rows.append((list(cursors), SKIPPED))
        return rows

    def _keeps(self) -> Any:
        """By key: the test of an upstream event that this partition copies it; else None (all)."""
        if not self._source.by_key:
            return None
        codec = self._peers.deployment(self._source.upstream).runtime.depots[self._source.depot].codec
        partitions, mine = self._source.partitions, self._partition
        return lambda event: task_for_key(codec.partition_key(event), partitions) == mine

    def lag(self, after: Any) -> int | None:
        if after is None:
            return None
        try:
            depot = self._depot()
            ends = [depot.partition_info(p).end_offset for p in self._upstream]
        except Unavailable:  # restarting: asked again in a second
            return None
        return sum(max(0, end - cursor) for end, cursor in zip(ends, after, strict=True))

    def _report(self, cursors: list[int]) -> None:
        """Tell the upstream tasks how far this mirror copied, when it moved (at most every MIRROR_REPORT_S)."""
        now = time.monotonic()
        if self._reported is not None and (self._reported[0] == cursors or now - self._reported[1] < MIRROR_REPORT_S):
            return
        send_progress(self._peers.deployment(self._source.upstream), self._source,
                      zip(self._upstream, cursors, strict=True))
        self._reported = (list(cursors), now)

    def _unwatch(self) -> None:
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.close()

    def close(self) -> None:
        self._unwatch()
