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
(`headwater.sources.mirror`) tells the upstream task owning a partition how far it has copied
(`MirrorProgress`); the task stores it under `mirror/` in its meta, and its retention never trims
past it (`consumer_floor`). Destroying the mirroring module, or removing the mirror, forgets it
there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from headwater.engine import messages
from headwater.engine.messages import MirrorProgress
from headwater.engine.meta import U64
from headwater.engine.sources import Source, SourceReader
from headwater.storage import Batch, Store

__all__ = ["MirrorSource", "consumer_floor", "consumer_key", "forget_consumer", "record_consumer", "send_progress"]


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
        raise TypeError("a mirror is read through the clients of the process hosting its task: its host "
                        "opens it (headwater.sources.mirror.MirrorReader)")


def send_progress(deployment: Any, source: MirrorSource, offsets: Iterable[tuple[int, int]]) -> None:
    """Tell the upstream tasks how far mirror `source` has copied: (upstream partition, next offset)."""
    depot = deployment.runtime.depots[source.depot]
    for partition, offset in offsets:
        message = MirrorProgress(depot.depot_id, source.consumer, offset)
        deployment.transport.send(depot.task_of_partition(partition), messages.encode(message))


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
    prefix = consumer_key(depot_id, "")
    floor = end
    for _, value in store.iterate("meta", prefix, prefix[:-1] + b"0"):
        floor = min(floor, U64.unpack(value)[0])
    return floor
