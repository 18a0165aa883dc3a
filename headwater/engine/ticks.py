"""Tick depots: time as a depot (`module.tick_depot(name, every_s=...)`).

A tick depot is an external depot whose source is the clock: its one partition (on task 0)
receives an `hw.Tick` every `every_s` seconds, appended like any external record (the tick's
time is its position, stored with it, so a restart neither repeats a tick nor invents the ones
it missed: the next tick comes one period after the last, or at once if that is past). Stream
topologies subscribe to it like to any depot; a microbatch topology sees at most one tick per
batch, the latest (`Source.latest_only_in_batches`).

The reader runs on its host's poller thread, like every source's reader, and reads the wall
clock there; the engine itself still only sees the stored records.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from headwater.engine.sources import Source, SourceReader

__all__ = ["TICK_PERIOD_MAX_S", "TICK_PERIOD_MIN_S", "Tick", "TickSource"]

TICK_PERIOD_MIN_S = 0.01  # a faster clock is a busy loop, not a depot
TICK_PERIOD_MAX_S = 366 * 24 * 3600.0


@dataclass(frozen=True)
class Tick:
    """A tick of a tick depot: `time` is when it was due (UTC)."""

    time: dt.datetime


class TickSource(Source):
    """The clock, every `every_s` seconds, as a one-partition source."""

    partitions = 1
    lag_unit = "ticks"
    latest_only_in_batches = True

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s

    def open(self, partition: int) -> SourceReader:
        return _TickReader(self.every_s)

    def describe(self) -> str:
        return f"a tick every {self.every_s:g} s"


class _TickReader(SourceReader):
    def __init__(self, every_s: float) -> None:
        self._every_us = int(every_s * 1_000_000)
        self._opened_us = _now_us()

    def read(self, after: Any, *, records_max: int, wait_s: float) -> Sequence[tuple[Any, Any]]:
        due = (after if isinstance(after, int) else self._opened_us) + self._every_us
        now = _now_us()
        if now < due:
            time.sleep(min(wait_s, (due - now) / 1_000_000))
            now = _now_us()
            if now < due:
                return []
        # Ticks missed while nothing ran are not made up: one tick now, and the next a period later.
        at = due if now - due < self._every_us else now
        return [(at, Tick(dt.datetime.fromtimestamp(at / 1_000_000, dt.UTC)))]

    def lag(self, after: Any) -> int | None:
        if not isinstance(after, int):
            return None
        return max(0, (_now_us() - after) // self._every_us - 1)


def _now_us() -> int:
    return time.time_ns() // 1000
