"""The store port: what the engine needs from an ordered, durable key-value store.

A store holds named column families of byte keys sorted bytewise. Writes happen only in
atomic batches; a batch written with ``sync=True`` is on disk when ``write`` returns.
Adapters: ``RocksStore`` (rocksdict, the real one) and ``MemoryStore`` (tests, ``path=None``
clusters that need no durability). One conformance suite in ``tests/storage`` runs against both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["COLUMN_FAMILIES", "Batch", "Reader", "Store"]

# Depot records, PState data, and engine metadata (progress, dead letters, idempotency keys,
# the deployed module definitions) live apart so a scan of one never walks the others.
COLUMN_FAMILIES = ("depot", "pstate", "meta")


@dataclass(slots=True)
class Batch:
    """Operations to apply atomically: ``(column_family, key, value)``; value None deletes.

    Range deletions are kept separately and applied before the point operations, so a batch
    that clears a collection and then rewrites some of its elements keeps the new elements.
    """

    operations: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    range_deletions: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def put(self, column_family: str, key: bytes, value: bytes) -> None:
        self.operations.append((column_family, key, value))

    def delete(self, column_family: str, key: bytes) -> None:
        self.operations.append((column_family, key, None))

    def delete_range(self, column_family: str, start: bytes, stop: bytes) -> None:
        self.range_deletions.append((column_family, start, stop))

    def __len__(self) -> int:
        return len(self.operations) + len(self.range_deletions)


class Reader(ABC):
    """Committed state of one column family."""

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def iterate(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < stop`` (no upper bound when stop is None), sorted."""


class Store(ABC):
    @abstractmethod
    def reader(self, column_family: str) -> Reader: ...

    @abstractmethod
    def write(self, batch: Batch, *, sync: bool) -> None:
        """Apply the batch atomically; with ``sync`` it is on disk when this returns."""

    @abstractmethod
    def sync(self) -> None:
        """Make every batch written so far durable (for writes made with ``sync=False``)."""

    @abstractmethod
    def close(self) -> None: ...

    def compact(self, column_family: str, start: bytes, stop: bytes) -> None:  # noqa: B027 - optional
        """Give back the disk space of what was deleted in [start, stop) (a hint; the default does nothing)."""

    def get(self, column_family: str, key: bytes) -> bytes | None:
        return self.reader(column_family).get(key)

    def iterate(
        self, column_family: str, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.reader(column_family).iterate(start, stop, reverse=reverse)
