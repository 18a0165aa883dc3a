"""External sources: the interface an external depot ingests through (`module.external_depot`).

A `Source` describes an external log (a Redis stream, a PostgreSQL replication slot) and travels
with the module; in the process hosting each of the depot's partitions, the host opens one
`SourceReader` per partition and polls it. Readers are live objects (connections) and never leave
that process. The engine never calls a source: it stores the position of what it ingested in the
same write batch as the records (`headwater.engine.ingest`), and asks its host for the next batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["SKIPPED", "Source", "SourceReader", "source_time_us"]


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"

    def __reduce__(self) -> str:
        return "SKIPPED"


# An event a reader returns for a position it moved past without an event for this depot partition
# (a mirror partition passing another's records): the position is stored, nothing is appended.
SKIPPED: Any = _Skipped()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def source_time_us(time: Any) -> int:
    """A reader's event time (an aware datetime, or microseconds since the epoch) in microseconds."""
    if isinstance(time, datetime):
        if time.tzinfo is None:
            raise TypeError(f"a source's event time must be an aware datetime (with tzinfo), not {time!r}")
        return (time - _EPOCH) // _MICROSECOND
    if isinstance(time, int) and not isinstance(time, bool) and time >= 0:
        return time
    raise TypeError(f"a source's event time must be an aware datetime or microseconds since the epoch (an int "
                    f">= 0), not {time!r}")


class SourceReader(ABC):
    """One partition of an external log, read from one process. Made by `Source.open`.

    Positions are the source's own (an entry id, a log sequence number): headwater stores them
    and hands them back, never looks inside. They must be values msgpack encodes (str, int,
    bytes, bool, None, lists or tuples of them; a tuple comes back as a list).
    """

    def start(self) -> Any:
        """Where to begin when the depot has ingested nothing from this partition yet: a position
        to read after (stored at once, so a restart begins there too), or None to read from the
        source's first record. The default is None."""
        return None

    @abstractmethod
    def read(self, after: Any, *, records_max: int, wait_s: float) -> Sequence[tuple[Any, ...]]:
        """Up to `records_max` (position, event) pairs that follow position `after` (None: from the
        first record), in the source's order; wait up to `wait_s` seconds for the first one, then
        return what there is (possibly nothing). An exception is reported in `status()` and the
        read is tried again after a back-off; nothing is skipped.

        A row may carry the event's time at the source as a third item, (position, event, time):
        an aware `datetime`, or microseconds since the epoch. The record's timestamp
        (`ctx.timestamp`, a depot read's) is then that time, no later than its ingestion and no
        earlier than the partition's previous record; without one it is the ingestion's time."""

    def lag(self, after: Any) -> int | None:
        """How far the source is ahead of position `after`, in the source's own unit (`Source.lag_unit`),
        or None when it cannot tell cheaply. Asked at most once a second; the default is None."""
        return None

    def close(self) -> None:  # noqa: B027 (a hook: a reader with nothing to release need not define it)
        """Release what the reader holds (its connection)."""


class Source(ABC):
    """An external log that `module.external_depot(name, source, event_type)` ingests.

    The source is a description (where the log is, which part of it) that travels to every
    process hosting the depot's partitions, so it must pickle: connect in `open`, not in
    `__init__`. Source partition i becomes depot partition i, on task i; a source has at most as
    many partitions as the module has tasks.

        class Lines(hw.Source):                     # a file, one event per line
            def __init__(self, path): self.path = path
            def open(self, partition): return LinesReader(self.path)
    """

    partitions: int = 1  # the source's partitions, each read by one poller
    lag_unit: str = "records"  # what `SourceReader.lag` counts
    latest_only_in_batches: bool = False  # a microbatch topology sees only the last record of a batch (ticks)

    @abstractmethod
    def open(self, partition: int) -> SourceReader:
        """A reader of `partition` (0 to `partitions` - 1), in the process that polls it."""

    def describe(self) -> str:
        """A short description for status and errors (no secrets: it is shown)."""
        return type(self).__name__
