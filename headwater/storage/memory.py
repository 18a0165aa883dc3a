"""In-memory store adapter: same semantics as RocksStore, nothing on disk."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from sortedcontainers import SortedDict

from headwater.errors import Unavailable
from headwater.storage.base import COLUMN_FAMILIES, Batch, Reader, Store

__all__ = ["MemoryStore"]


class _MemoryReader(Reader):
    def __init__(self, data: SortedDict, lock: threading.Lock) -> None:
        self._data = data
        self._lock = lock

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def iterate(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        # Copy the range under the lock: a reader must see one committed state, never half a batch.
        with self._lock:
            keys = list(self._data.irange(start, stop, inclusive=(True, False), reverse=reverse))
            pairs = [(k, self._data[k]) for k in keys]
        return iter(pairs)


class MemoryStore(Store):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = {name: SortedDict() for name in COLUMN_FAMILIES}
        self._readers = {name: _MemoryReader(d, self._lock) for name, d in self._data.items()}
        self._closed = False

    def reader(self, column_family: str) -> Reader:
        return self._readers[column_family]

    def write(self, batch: Batch, *, sync: bool) -> None:
        if self._closed:
            raise Unavailable("the store is closed; reopen the cluster to write again")
        with self._lock:
            for column_family, start, stop in batch.range_deletions:
                data = self._data[column_family]
                for key in list(data.irange(start, stop, inclusive=(True, False))):
                    del data[key]
            for column_family, key, value in batch.operations:
                data = self._data[column_family]
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value

    def sync(self) -> None:
        if self._closed:  # nothing is ever durable here, but a closed store says so like RocksStore
            raise Unavailable("the store is closed")

    def close(self) -> None:
        self._closed = True
