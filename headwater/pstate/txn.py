"""A handler's pending PState writes, overlaid on the committed state it reads.

`Txn(reader)` collects puts, deletes and range deletes without touching storage, and answers
`get`/`iterate` as if they were already applied, so a handler reads its own writes. The engine
takes `pending()` into the same storage write batch as the topology's progress; dropping the
Txn (a handler raised) leaves storage exactly as it was.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Reader", "Txn", "prefix_end"]


class Reader(Protocol):
    """Committed state of one column family of one task (`headwater.storage.Reader` fits)."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]: ...


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with `prefix` (a range's exclusive stop)."""
    stripped = prefix.rstrip(b"\xff")
    assert stripped, "a prefix of only 0xff bytes has no end"
    return stripped[:-1] + bytes([stripped[-1] + 1])


_ABSENT: Any = object()  # Txn.get's marker for a key with no pending write


class Txn:
    """Pending writes over a Reader, readable like one."""

    # A Txn is made per handler invocation and most never iterate, so pending writes live in a
    # plain dict (cheap to create, O(1) to read and write) and are sorted only when a range is
    # read: `_keys` holds the dict's keys sorted, up to the ones added since (see `_sorted_keys`).
    __slots__ = ("_cleared", "_keys", "_reader", "_writes")

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._writes: dict[bytes, bytes | None] = {}  # key -> value, or None for a deleted key
        self._keys: list[bytes] = []  # the first len(_keys) keys of _writes, in insertion order, sorted
        self._cleared: list[tuple[bytes, bytes]] = []  # deleted ranges [start, stop): sorted, disjoint

    # --- reading ------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        txn = self
        while True:  # down through the Txns stacked under this one, without a call per layer
            value = txn._writes.get(key, _ABSENT)
            if value is not _ABSENT:
                return value
            if txn._cleared and txn._is_cleared(key):
                return None
            reader = txn._reader
            if type(reader) is not Txn:
                return reader.get(key)
            txn = reader

    def iterate(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with `start <= key < stop`, sorted (descending if `reverse`), pending writes applied."""
        # Snapshot the overlay now: the caller may write while it iterates.
        keys = self._sorted_keys()
        low = bisect.bisect_left(keys, start)
        high = len(keys) if stop is None else bisect.bisect_left(keys, stop, low)
        writes = self._writes
        overlay = [(key, writes[key]) for key in keys[low:high]]
        if not overlay and not self._cleared:
            return self._reader.iterate(start, stop, reverse=reverse)  # nothing to merge: skip a layer per pair
        if reverse:
            overlay.reverse()
        return _merge(self._committed(start, stop, reverse), overlay, reverse)

    def _committed(self, start: bytes, stop: bytes | None, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        """The reader's pairs in [start, stop), skipping cleared ranges without visiting them."""
        segments = _subtract(start, stop, self._cleared)
        for segment_start, segment_stop in reversed(segments) if reverse else segments:
            yield from self._reader.iterate(segment_start, segment_stop, reverse=reverse)

    def _is_cleared(self, key: bytes) -> bool:
        index = bisect.bisect_right(self._cleared, key, key=lambda cleared: cleared[0]) - 1
        return index >= 0 and self._cleared[index][0] <= key < self._cleared[index][1]

    def _sorted_keys(self) -> list[bytes]:
        """Every pending key, sorted (the list itself: do not change it)."""
        keys, writes = self._keys, self._writes
        if len(keys) < len(writes):
            # A dict keeps insertion order and keys leave it only through delete_range, which
            # sorts first, so the keys added since the last sort are exactly its tail. Timsort
            # merges that tail into the sorted run in about linear time.
            keys += itertools.islice(writes, len(keys), None)
            keys.sort()
        return keys

    # --- writing ------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> None:
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    def delete_range(self, start: bytes, stop: bytes) -> None:
        """Delete every key in [start, stop), committed or pending."""
        keys, writes = self._sorted_keys(), self._writes
        low = bisect.bisect_left(keys, start)
        high = bisect.bisect_left(keys, stop, low)
        for key in keys[low:high]:
            del writes[key]
        del keys[low:high]
        self._cleared = _union(self._cleared, (start, stop))

    def pending(self, *, expand_ranges: bool = True) -> list[tuple[bytes, bytes | None]]:
        """Every change as (key, value or None for a delete), sorted by key.

        By default range deletes are expanded into deletes of the committed keys they cover, so
        the list alone reproduces the Txn's effect. With `expand_ranges=False` they are left out:
        apply `deleted_ranges()` first, then these (as `storage.Batch` does), to skip reading them.
        """
        writes = self._writes
        if not expand_ranges or not self._cleared:
            return [(key, writes[key]) for key in self._sorted_keys()]
        changes = dict(writes)
        for start, stop in self._cleared:
            for key, _ in self._reader.iterate(start, stop):
                changes.setdefault(key, None)
        return sorted(changes.items())

    def merge_into(self, target: Txn) -> None:
        """Apply these pending writes onto `target` (range deletes first, as a storage batch does).

        Point writes go straight into the target's dict: no sort, since only a range read of the
        target needs order, and it sorts what was added since (see `_sorted_keys`).
        """
        for start, stop in self._cleared:
            target.delete_range(start, stop)
        target._writes.update(self._writes)

    def deleted_ranges(self) -> list[tuple[bytes, bytes]]:
        """The ranges deleted by `delete_range`, sorted and disjoint."""
        return list(self._cleared)

    def savepoint(self) -> tuple:
        """The pending state now, to return to with `rollback` (copies the pending writes)."""
        return self._writes.copy(), list(self._keys), list(self._cleared)

    def rollback(self, savepoint: tuple) -> None:
        """Forget every write made since `savepoint`."""
        writes, keys, cleared = savepoint
        self._writes = writes.copy()  # copies keep the insertion order `_keys` relies on
        self._keys = list(keys)
        self._cleared = list(cleared)

    def clear(self) -> None:
        """Forget every pending write."""
        self._writes = {}
        self._keys = []
        self._cleared = []

    def __len__(self) -> int:
        return len(self._writes) + len(self._cleared)

    def __repr__(self) -> str:
        return f"<Txn {len(self._writes)} writes, {len(self._cleared)} deleted ranges>"


def _merge(
    committed: Iterator[tuple[bytes, bytes]], overlay: list[tuple[bytes, bytes | None]], reverse: bool
) -> Iterator[tuple[bytes, bytes]]:
    """Merge two sorted streams; the overlay wins on equal keys and None in it hides a key."""
    position = 0

    def before(a: bytes, b: bytes) -> bool:
        return a > b if reverse else a < b

    for key, value in committed:
        while position < len(overlay) and not before(key, overlay[position][0]):
            pending_key, pending_value = overlay[position]
            position += 1
            if pending_value is not None:
                yield pending_key, pending_value
            if pending_key == key:
                break
        else:
            yield key, value
    for pending_key, pending_value in overlay[position:]:
        if pending_value is not None:
            yield pending_key, pending_value


def _subtract(start: bytes, stop: bytes | None, cleared: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes | None]]:
    """The parts of [start, stop) outside the cleared ranges, in order."""
    segments: list[tuple[bytes, bytes | None]] = []
    cursor: bytes = start
    for cleared_start, cleared_stop in cleared:
        if cleared_stop <= cursor:
            continue
        if stop is not None and cleared_start >= stop:
            break
        if cleared_start > cursor:
            segments.append((cursor, cleared_start))
        cursor = max(cursor, cleared_stop)
    if stop is None or cursor < stop:
        segments.append((cursor, stop))
    return segments


def _union(ranges: list[tuple[bytes, bytes]], new: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    merged: list[tuple[bytes, bytes]] = []
    for start, stop in sorted([*ranges, new]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged
