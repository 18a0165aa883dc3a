"""Mirrors: a module's topologies consuming another module's depot (`module.mirror_depot`).

A mirrored depot is an external depot whose source is the upstream depot: the mirroring module's
host reads the upstream partitions through the clients of its own process (`Transport.peers`),
and its task appends what it read together with the position (the next upstream offset of each
partition it copies), so each record is copied exactly once, in order per partition, however
either module's tasks restart.

The copy is partitioned like the upstream depot onto the mirroring module's tasks: with equal task
counts partition i copies upstream partition i; otherwise, when the upstream depot has a
`partition_by`, each mirror partition reads every upstream partition and keeps the records whose
key this module's hashing gives it (so a handler finds its keyed PStates on its own task, as for a
local depot), and without one, partition i copies the upstream partitions p with p % tasks == i.

The upstream module must keep every record until each mirror has copied it. A mirror's reader
tells the upstream task owning a partition how far it has copied (`MirrorProgress`); the task
stores it under `mirror/` in its meta, and its retention never trims past it
(`consumer_floor`). Destroying the mirroring module, or removing the mirror, forgets it there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from headwater.engine import messages
from headwater.engine.messages import MirrorProgress
from headwater.engine.meta import U64
from headwater.engine.sources import SKIPPED, Source, SourceReader
from headwater.errors import Unavailable
from headwater.schema import task_for_key
from headwater.storage import Batch, Store

__all__ = ["MIRROR_POLL_MAX_S", "MIRROR_POLL_MIN_S", "MirrorReader", "MirrorSource", "consumer_floor",
           "forget_consumer", "record_consumer"]

# While the upstream partitions have nothing new, look again after MIRROR_POLL_MIN_S, then twice as
# long each time up to MIRROR_POLL_MAX_S: soon after a record (streams come in bursts), rarely when idle.
MIRROR_POLL_MIN_S = 0.0005
MIRROR_POLL_MAX_S = 0.01
MIRROR_UNAVAILABLE_WAIT_S = 0.1  # the upstream is not available (restarting): read again after this
MIRROR_REPORT_S = 0.2  # a reader tells the upstream how far it copied at most this often (and on start)


class MirrorSource(Source):
    """Depot `depot` of module `upstream`, copied into a depot of another module.

    `partitions` and the upstream's partition count are set at deploy, when both modules are
    known (`headwater.cluster.mirrors.resolve`)."""

    lag_unit = "records"

    def __init__(self, upstream: str, depot: str, consumer: str) -> None:
        self.upstream = upstream
        self.depot = depot
        self.consumer = consumer  # "module/local depot": how the upstream knows this mirror
        self.partitions = 1
        self.upstream_partitions = 1
        self.from_beginning = False  # a subscribed topology starts at the beginning (or a date)
        self.by_key = False  # each partition reads every upstream one and keeps the keys it owns
        # Where each partition begins (its upstream partitions' next offsets), taken at the deploy
        # that added the mirror, so that nothing appended after that deploy is missed.
        self.start_at: list[list[int]] | None = None

    def describe(self) -> str:
        return f"mirror of {self.upstream}.{self.depot}"

    def assigned(self, partition: int) -> list[int]:
        """The upstream partitions mirror partition `partition` reads, in order."""
        if self.by_key:
            return list(range(self.upstream_partitions))
        return list(range(partition, self.upstream_partitions, self.partitions))

    def open(self, partition: int) -> SourceReader:
        raise TypeError("a mirror is read through the clients of the process hosting its task: "
                        "open it with open_with(peers, partition)")

    def open_with(self, peers: Any, partition: int) -> MirrorReader:
        return MirrorReader(self, peers, partition)


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

    def _depot(self) -> Any:
        return self._peers.depot(self._source.upstream, self._source.depot)  # looked up anew: it survives updates

    def start(self) -> Any:
        if self._source.start_at is not None:  # fixed at the deploy that added the mirror
            return list(self._source.start_at[self._partition])
        depot = self._depot()
        infos = [depot.partition_info(p) for p in self._upstream]
        return [info.start_offset if self._source.from_beginning else info.end_offset for info in infos]

    def read(self, after: Any, *, records_max: int, wait_s: float) -> Sequence[tuple[Any, Any]]:
        cursors = list(after) if after is not None else [0] * len(self._upstream)
        if len(cursors) != len(self._upstream):
            raise ValueError(f"{self._source.describe()}: the stored position {after!r} does not match the "
                             f"{len(self._upstream)} upstream partitions this partition copies")
        deadline = time.monotonic() + wait_s
        try:
            return self._read(cursors, records_max, deadline)
        except Unavailable:  # the upstream restarts (an update, a worker's restart), or the cluster closes
            time.sleep(max(0.0, min(deadline - time.monotonic(), MIRROR_UNAVAILABLE_WAIT_S)))
            return []

    def _read(self, cursors: list[int], records_max: int, deadline: float) -> list[tuple[Any, Any]]:
        self._report(cursors)
        depot = self._depot()
        mine = self._keeps()
        rows: list[tuple[Any, Any]] = []
        pause = MIRROR_POLL_MIN_S
        while True:
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
                    if mine is None or mine(record.event):
                        rows.append((list(cursors), msgspec.to_builtins(record.event)))
            if read and (not rows or rows[-1][0] != cursors):
                # Records of other partitions were read after the last kept one: their position is
                # stored too, so that they are not read again.
                rows.append((list(cursors), SKIPPED))
            if rows or time.monotonic() >= deadline:
                return rows
            time.sleep(pause)
            pause = min(pause * 2, MIRROR_POLL_MAX_S)

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
        deployment = self._peers.deployment(self._source.upstream)
        depot = deployment.runtime.depots[self._source.depot]
        for partition, cursor in zip(self._upstream, cursors, strict=True):
            message = MirrorProgress(depot.depot_id, self._source.consumer, cursor)
            deployment.transport.send(depot.task_of_partition(partition), messages.encode(message))
        self._reported = (list(cursors), now)


# ---- on the upstream task --------------------------------------------------------------------
def consumer_key(depot_id: int, consumer: str) -> bytes:
    return b"mirror/" + depot_id.to_bytes(2, "big") + b"/" + consumer.encode()


def record_consumer(batch: Batch, depot_id: int, consumer: str, next_offset: int) -> None:
    """A mirror copied this task's partition of `depot_id` up to `next_offset` (exclusive)."""
    batch.put("meta", consumer_key(depot_id, consumer), U64.pack(next_offset))


def forget_consumer(store: Store, batch: Batch, consumer: str) -> None:
    """A mirror is gone (its module destroyed, or the mirror removed): it holds nothing back any more."""
    suffix = b"/" + consumer.encode()
    for key, _ in store.iterate("meta", b"mirror/", b"mirror0"):
        if key.endswith(suffix) and len(key) == len(b"mirror/") + 2 + len(suffix):
            batch.delete("meta", key)


def consumer_floor(store: Store, depot_id: int, end: int) -> int:
    """The first record of the partition some mirror has not copied yet (or `end`)."""
    prefix = b"mirror/" + depot_id.to_bytes(2, "big") + b"/"
    floor = end
    for _, value in store.iterate("meta", prefix, prefix[:-1] + b"0"):
        floor = min(floor, U64.unpack(value)[0])
    return floor


def consumers(store: Store, depot_id: int) -> dict[str, int]:
    """The mirrors of this task's partition of `depot_id`, and how far each copied it."""
    prefix = b"mirror/" + depot_id.to_bytes(2, "big") + b"/"
    return {key[len(prefix):].decode(): U64.unpack(value)[0]
            for key, value in store.iterate("meta", prefix, prefix[:-1] + b"0")}
