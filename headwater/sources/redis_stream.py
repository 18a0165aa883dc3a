"""`RedisStream`: an external depot fed by Redis streams, read with XREAD from the stored entry id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from headwater.engine.sources import Source, SourceReader
from headwater.errors import DefinitionError

__all__ = ["LAG_COUNT_MAX", "RedisStream"]

LAG_COUNT_MAX = 100_000  # entries counted for the lag; past it the lag shows this many
# Counts the entries after an id on the server, so that nothing but a number crosses the network.
_COUNT_AFTER = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
return #entries
"""


class RedisStream(Source):
    """The entries of Redis streams: stream `streams[i]` is source partition i (and depot partition i).

    The position is the entry id; each event is the entry's fields as a `dict[str, str]`, which
    the depot converts into its event type by field name (numbers from strings), or, with
    `field="data"`, the JSON value held in that one field. `start="beginning"` ingests what the
    stream already holds; `start="end"` only what is added after the depot first reads it.
    Status shows the lag in entries not yet ingested (counted up to 100,000).

        events = m.external_depot("clicks", hw.sources.RedisStream("redis://localhost:6379/0", "clicks"), Click)
    """

    lag_unit = "entries"

    def __init__(self, url: str, streams: str | Sequence[str], *, start: str = "beginning",
                 field: str | None = None) -> None:
        keys = [streams] if isinstance(streams, str) else list(streams)
        if not keys or not all(isinstance(key, str) and key for key in keys):
            raise DefinitionError(f"RedisStream: streams must be a stream key or a list of them, not {streams!r}")
        if start not in ("beginning", "end"):
            raise DefinitionError(f"RedisStream: start={start!r} must be 'beginning' or 'end'")
        self.url = url
        self.streams = keys
        self.start = start
        self.field = field
        self.partitions = len(keys)

    def open(self, partition: int) -> SourceReader:
        return _Reader(self, self.streams[partition])

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        shown = urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path, "", ""))
        return f"RedisStream({shown}, {', '.join(self.streams)})"  # without a password the URL may hold


class _Reader(SourceReader):
    def __init__(self, source: RedisStream, key: str) -> None:
        try:
            import redis
        except ImportError as e:
            raise ImportError("hw.sources.RedisStream needs the redis package: pip install 'headwater[sources]'"
                              ) from e
        self._source = source
        self._key = key
        self._redis = redis.Redis.from_url(source.url, decode_responses=True)
        self._count_after = self._redis.register_script(_COUNT_AFTER)

    def start(self) -> Any:
        if self._source.start == "beginning":
            return None
        last = self._redis.xrevrange(self._key, count=1)
        return last[0][0] if last else "0-0"

    def read(self, after: Any, *, records_max: int, wait_s: float) -> list[tuple[Any, ...]]:
        block_ms = max(1, int(wait_s * 1000))
        answer: Any = self._redis.xread({self._key: after or "0-0"}, count=records_max, block=block_ms)
        if not answer:
            return []
        entries: list[tuple[str, dict[str, str]]] = answer[0][1]  # [[stream, [(id, fields), ...]]]
        # An entry id's first part is the time XADD gave it, in milliseconds: the record's timestamp.
        if self._source.field is None:
            return [(entry_id, fields, _id_time_us(entry_id)) for entry_id, fields in entries]
        return [(entry_id, self._json(entry_id, fields), _id_time_us(entry_id)) for entry_id, fields in entries]

    def _json(self, entry_id: str, fields: dict[str, str]) -> Any:
        field = self._source.field
        assert field is not None
        if field not in fields:
            raise ValueError(f"entry {entry_id} of stream {self._key!r} has no field {field!r} (it has "
                             f"{sorted(fields)}); nothing after it is ingested until it is fixed")
        return json.loads(fields[field])

    def lag(self, after: Any) -> int:
        start = "-" if after is None else f"({after}"
        return int(self._count_after(keys=[self._key], args=[start, LAG_COUNT_MAX]))

    def close(self) -> None:
        self._redis.close()


def _id_time_us(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0]) * 1000
