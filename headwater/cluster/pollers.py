"""Pollers: the threads that read external sources for the tasks of this process.

One `Poller` per external depot partition, owned by the `TaskThread` of the task that owns the
partition, so it lives where the partition's store is and moves with the task (a worker restart,
a failover). The task asks for a read (`ask`, with the position to read after); the poller opens
its `SourceReader` in this process, reads a bounded batch, converts and encodes the events into the
depot's event type, and hands them to the task as one `ExternalRecords` message through its inbox.
Reading never happens on the task's thread: a source that waits for data only holds its poller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from headwater.engine import messages
from headwater.engine.ingest import PollRequest
from headwater.engine.messages import ExternalRecords
from headwater.engine.mirrors import MirrorSource
from headwater.engine.sources import SKIPPED, source_time_us
from headwater.sources.mirror import MirrorReader

__all__ = ["EXTERNAL_READ_RECORDS_MAX", "EXTERNAL_READ_WAIT_S", "Poller"]

_log = logging.getLogger("headwater.ingest")

EXTERNAL_READ_RECORDS_MAX = 1_000  # events one read of a source may return
EXTERNAL_READ_WAIT_S = 0.5  # how long one read waits for a first event (also how soon a stop is seen)
EXTERNAL_RETRY_FIRST_S = 0.2  # after a read that raised, wait this long before reporting it and reading again...
EXTERNAL_RETRY_MAX_S = 30.0  # ... doubling up to this
EXTERNAL_LAG_EVERY_S = 1.0  # how often the source is asked how far ahead it is
POLLER_STOP_WAIT_S = 2.0  # how long stopping a task waits for its pollers' reads to end


class Poller:
    """Reads one external depot partition when its task asks; at most one read at a time."""

    def __init__(self, request: PollRequest, deliver: Callable[[bytes], None], name: str, peers: Any = None) -> None:
        depot = request.depot
        self._peers = peers  # the clients of this process: a mirror reads its upstream module through them
        self._source = depot.decl.source
        self._codec = depot.codec
        self._event_type = depot.decl.event_type
        self._depot_id = depot.depot_id
        self._partition = request.partition
        self._deliver = deliver
        self._condition = threading.Condition()
        self._asked: list[tuple[bytes | None, bool]] = []  # at most one: the latest ask replaces an unanswered one
        self._stopping = False
        self._failures = 0
        self._lag_at = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def ask(self, after: bytes | None, *, lag_only: bool = False) -> None:
        """Read what follows `after`, or (`lag_only`, while paused) only measure the lag, once a period."""
        with self._condition:
            self._asked[:] = [(after, lag_only)]
            self._condition.notify()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()

    def join(self, deadline: float) -> None:
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> tuple[bytes | None, bool] | None:
        with self._condition:
            while not self._asked and not self._stopping:
                self._condition.wait()
            if self._stopping:
                return None
            return self._asked.pop()

    def _run(self) -> None:
        reader = None
        try:
            while True:
                asked = self._next()
                if asked is None:
                    return
                after, lag_only = asked
                try:
                    if reader is None:
                        reader = (MirrorReader(self._source, self._peers, self._partition)
                                  if isinstance(self._source, MirrorSource) else self._source.open(self._partition))
                    answer = self._measure(reader, after) if lag_only else self._read(reader, after)
                    self._failures = 0
                except Exception as e:  # the source's: reported on the task (status), then read again
                    self._failures += 1
                    error = f"{type(e).__name__}: {e}"
                    _log.warning("reading %s (partition %d) failed: %s", self._source.describe(), self._partition,
                                 error)
                    if reader is not None:
                        _close(reader)
                        reader = None
                    with self._condition:
                        self._condition.wait_for(lambda: self._stopping, self._backoff_s())
                    answer = ExternalRecords(self._depot_id, self._partition, after, None, [], error=error)
                self._deliver(messages.encode(answer))
        finally:
            if reader is not None:
                _close(reader)

    def _measure(self, reader: Any, after: bytes | None) -> ExternalRecords:
        """While paused: the lag, once every EXTERNAL_LAG_EVERY_S, and nothing read."""
        with self._condition:
            self._condition.wait_for(lambda: self._stopping, EXTERNAL_LAG_EVERY_S)
        self._lag_at = 0.0
        lag = self._lag(reader, None if after is None else msgspec.msgpack.decode(after))
        return ExternalRecords(self._depot_id, self._partition, after, after, [], lag)

    def _backoff_s(self) -> float:
        return min(EXTERNAL_RETRY_MAX_S, EXTERNAL_RETRY_FIRST_S * 2 ** (self._failures - 1))

    def _read(self, reader: Any, after: bytes | None) -> ExternalRecords:
        position = None if after is None else msgspec.msgpack.decode(after)
        if after is None:
            start = reader.start()
            if start is not None:  # pinned first, so that a restart starts there too
                return ExternalRecords(self._depot_id, self._partition, None, _encode_position(start), [])
        rows = reader.read(position, records_max=EXTERNAL_READ_RECORDS_MAX, wait_s=EXTERNAL_READ_WAIT_S)
        if len(rows) > EXTERNAL_READ_RECORDS_MAX:
            raise ValueError(f"the source's reader returned {len(rows)} events, above records_max="
                             f"{EXTERNAL_READ_RECORDS_MAX}")
        kept = [row for row in rows if row[1] is not SKIPPED]
        events = [self._encode(row[1]) for row in kept]
        times = [source_time_us(row[2]) if len(row) > 2 else 0 for row in kept]
        new_position = _encode_position(rows[-1][0]) if rows else after
        latest = rows[-1][0] if rows else position
        return ExternalRecords(self._depot_id, self._partition, after, new_position, events, self._lag(reader, latest),
                               times=times if any(times) else None)

    def _encode(self, event: Any) -> bytes:
        if isinstance(event, dict) and self._event_type is not Any and self._event_type is not dict:
            try:  # a dict of fields, strings where the type has numbers (a Redis entry): converted by name
                event = msgspec.convert(event, self._event_type, strict=False)
            except msgspec.ValidationError as e:
                from headwater.engine.events import schema_error

                raise schema_error(self._codec.label, e) from None
        return self._codec.encode(event)[0]

    def _lag(self, reader: Any, position: Any) -> int:
        """How far the source is past `position`, asked at most every EXTERNAL_LAG_EVERY_S (-1: not now)."""
        now = time.monotonic()
        if now - self._lag_at < EXTERNAL_LAG_EVERY_S:
            return -1
        self._lag_at = now
        lag = reader.lag(position)
        return -1 if lag is None else int(lag)


def _encode_position(position: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(position)
    except (TypeError, msgspec.EncodeError) as e:
        raise TypeError(f"a source position must be a value msgpack encodes (str, int, bytes, lists of them), "
                        f"not {position!r}: {e}") from None


def _close(reader: Any) -> None:
    try:
        reader.close()
    except Exception:
        _log.exception("closing a source reader raised")
