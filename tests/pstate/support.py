"""Helpers shared by the PState tests: an executor over a Txn, a counting reader, commits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from headwater.pstate import PStateLayout, Txn, View
from headwater.storage import Batch, Store


class LocalExecutor:
    """Runs a View's operations directly on a layout and a Txn (what a handler's executor does)."""

    def __init__(self, layout: PStateLayout, txn: Txn) -> None:
        self.layout, self.txn = layout, txn

    def read(self, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        return self.layout.read(self.txn, steps, op, args, kwargs)

    def write(self, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> None:
        self.layout.write(self.txn, steps, op, args, kwargs)


class CountingReader:
    """Wraps a Reader and counts the keys it touches."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.reset()

    def reset(self) -> None:
        self.gets = self.iterates = self.yielded = 0

    @property
    def touched(self) -> int:
        return self.gets + self.yielded

    def get(self, key: bytes) -> bytes | None:
        self.gets += 1
        return self.reader.get(key)

    def iterate(self, start: bytes, stop: bytes | None = None, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        self.iterates += 1
        for pair in self.reader.iterate(start, stop, reverse=reverse):
            self.yielded += 1
            yield pair


def commit(store: Store, txn: Txn) -> None:
    """Apply a Txn's pending writes to the store in one batch, as the engine does."""
    batch = Batch()
    for key, value in txn.pending():
        if value is None:
            batch.delete("pstate", key)
        else:
            batch.put("pstate", key, value)
    store.write(batch, sync=False)


class Harness:
    """One PState on one store: a fresh Txn per 'invocation', views over it."""

    def __init__(self, store: Store, schema: Any, pstate_id: int = 1, *, partitioned: bool | None = None) -> None:
        from headwater.schema import Map

        if partitioned is None:
            partitioned = isinstance(schema, Map)
        self.store, self.schema = store, schema
        self.layout = PStateLayout(schema, pstate_id, top_level_map_partitioned=partitioned)
        self.txn = Txn(store.reader("pstate"))

    @property
    def view(self) -> View:
        return View(LocalExecutor(self.layout, self.txn), self.schema, name="test.p")

    def commit(self) -> None:
        commit(self.store, self.txn)
        self.txn = Txn(self.store.reader("pstate"))

    def abort(self) -> None:
        self.txn = Txn(self.store.reader("pstate"))
