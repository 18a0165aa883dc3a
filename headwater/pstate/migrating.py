"""A PState whose stored data is migrating to a new schema, readable as if it were done.

`hw.migrated(...)` declares a new schema for a PState (or a part of one) with a function from an
old value to a new one. The update gives the PState a fresh id, so its new data has a key space
of its own, and the old data stays under the old id until it is moved. A PState is moved one
*entry* at a time: a key of a top-level partitioned map (with everything below it), or the whole
root of any other PState. An entry lives in exactly one of the two spaces:

- `MigratingReader` shows the new space with every entry still in the old one converted on the
  fly (read whole with the old layout, converted with the declared functions, laid out with the
  new one), so any read, of any shape, sees the migrated PState at once;
- a write first moves the entries it touches (`MigratingLayout.write`), so the new space never
  holds half an entry;
- the task moves the rest in the background, a bounded number per round (`move_some`).

The root's element count of a partitioned map counts both spaces from the start (set when the
migration begins), so `size()` needs no merging.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

import fdb.tuple

from headwater.errors import SchemaError
from headwater.pstate.layout import PStateLayout
from headwater.pstate.locations import CHILDREN, ENTRY, decode_count, encode_count
from headwater.pstate.navigators import Navigator
from headwater.pstate.txn import Reader, Txn, prefix_end
from headwater.schema import List, Map, Record, Schema, encode_key
from headwater.schema.keys import unpack_key

__all__ = ["MigratingLayout", "MigratingReader", "convert"]

_CONVERTED_KEPT = 64  # converted entries a layout keeps, for reads that come back to one entry


def convert(value: Any, schema: Schema) -> Any:
    """`value`, stored under the old schema, as the new `schema` holds it: each node declared with
    `hw.migrated` passes its old value through its function."""
    if schema.migration is not None:
        return schema.migration.fn(value)
    if value is None:
        return None
    if isinstance(schema, Map) and isinstance(value, dict):
        return {key: convert(item, schema.value_schema) for key, item in value.items()}
    if isinstance(schema, List) and isinstance(value, list):
        return [convert(item, schema.value_schema) for item in value]
    if isinstance(schema, Record) and isinstance(value, dict):
        return {name: convert(item, schema.fields[name]) if name in schema.fields else item
                for name, item in value.items()}
    return value


class _Empty:
    def get(self, key: bytes) -> bytes | None:
        return None

    def iterate(self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
                ) -> Iterator[tuple[bytes, bytes]]:
        return iter(())


class MigratingLayout(PStateLayout):
    """The layout of a PState during its migration: the new layout over a reader that converts
    what is still stored the old way, and writes that move each entry before changing it."""

    def __init__(self, schema: Any, pstate_id: int, *, top_level_map_partitioned: bool, old_schema: Schema,
                 old_id: int) -> None:
        super().__init__(schema, pstate_id, top_level_map_partitioned=top_level_map_partitioned)
        self.old = PStateLayout(old_schema, old_id, top_level_map_partitioned=top_level_map_partitioned)
        self.keyed = top_level_map_partitioned
        self.new_prefix = self.root.key[:-len(ENTRY)]  # encode_key(pstate_id)
        self.old_prefix = self.old.root.key[:-len(ENTRY)]
        self._converted: dict[tuple[bytes, bytes], dict[bytes, bytes]] = {}  # (old element value, segment) -> pairs
        # A range deletion per moved entry would leave RocksDB a tombstone for every one, which each
        # later read and write must step over: only entries stored under several keys get one.
        old_root = self.old.root.schema
        self._old_values_split = isinstance(old_root, Map) and old_root.value_schema.split

    # ---- the layout's operations ----------------------------------------------------------
    def read(self, reader: Reader, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        return super().read(MigratingReader(reader, self), steps, op, args, kwargs)

    def locate(self, reader: Reader, steps: tuple) -> Any:
        return super().locate(MigratingReader(reader, self), steps)

    def write(self, txn: Txn, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> None:
        if self.keyed and steps and not _is_navigator(steps[0]):
            key = self.root.schema.child(steps[0], "$")[0] if isinstance(self.root.schema, Map) else steps[0]
            self.move(txn, encode_key(key))
        else:  # the whole PState (or a navigator over its keys): every entry moves first
            self.move_some(txn, 1 << 62)
        super().write(txn, steps, op, args, kwargs)  # what the write touches is in the new space now

    # ---- moving entries -------------------------------------------------------------------
    def begin(self, txn: Txn) -> int:
        """Start the migration on one task: a partitioned map's new count starts as the old one.
        Returns how many entries there are to move."""
        if not self.keyed:
            return 1 if self.old_entry(txn, b"") is not None else 0
        count = decode_count(txn.get(self.old.root.key) or encode_count(0))
        txn.put(self.root.key, encode_count(count))
        return count

    def move_some(self, txn: Txn, limit: int, *, after: bytes | None = None,
                  over: Callable[[], bool] | None = None) -> tuple[int, bytes | None]:
        """Move up to `limit` entries still in the old space, in key order from after the entry
        `after` (the last one an earlier call moved: everything before it is moved, and starting
        there skips their deletion markers), and no more once one moved and `over()` says stop.
        Returns (moved, the last entry moved: pass it as `after` next time; None when none are left)."""
        if not self.keyed:
            moved_root = self.move(txn, b"")
            self._drop_old(txn)
            return int(moved_root), None
        start, stop = self.old.root.elements
        first = start if after is None else start + after + b"\x00"
        moved, last = 0, after
        for key, _ in txn.iterate(first, stop):
            if moved == limit or (moved and over is not None and over()):
                return moved, last if last is not None else b""
            last = key[len(start):]
            self.move(txn, last)
            moved += 1
        self._drop_old(txn)
        return moved, None

    def move(self, txn: Txn, segment: bytes) -> bool:
        """Move entry `segment` (the encoded key; b"" for an unkeyed root) into the new space, if it
        is still in the old one. Returns whether it moved."""
        pairs = self.converted(txn, segment)
        if pairs is None:
            return False
        for key, value in pairs.items():
            txn.put(key, value)
        if self.keyed:
            txn.delete(self.old.root.base + ENTRY + segment)
            if self._old_values_split:  # only a split value has keys below its own
                region = self.old.root.base + CHILDREN + segment
                txn.delete_range(region, prefix_end(region))
        else:
            self._drop_old(txn)
        return True

    def _drop_old(self, txn: Txn) -> None:
        txn.delete_range(self.old_prefix, prefix_end(self.old_prefix))

    def old_entry(self, reader: Reader, segment: bytes) -> bytes | None:
        key = self.old.root.base + ENTRY + segment if self.keyed else self.old.root.key
        return reader.get(key)

    def new_entry(self, reader: Reader, segment: bytes) -> bytes | None:
        key = self.root.base + ENTRY + segment if self.keyed else self.root.key
        return reader.get(key)

    def converted(self, reader: Reader, segment: bytes) -> dict[bytes, bytes] | None:
        """The new-space pairs of old entry `segment`, or None if it is not in the old space (or
        already in the new one)."""
        marker = self.old_entry(reader, segment)
        if marker is None or self.new_entry(reader, segment) is not None:
            return None
        cached = self._converted.get((marker, segment))
        if cached is not None:
            return cached
        old_root = self.old.root.schema
        steps: tuple = (old_root.keys.from_item(unpack_key(segment)),) if isinstance(old_root, Map) else ()
        value = self.old.read(reader, steps, "get")
        schema = self.root.schema.child(steps[0], "$")[1] if self.keyed else self.root.schema
        try:
            new_value = convert(value, schema)
        except Exception as e:
            raise SchemaError(f"a migration of a PState entry {steps!r} raised {type(e).__name__}: {e}; its "
                              "function must accept every value stored before the update") from e
        scratch = Txn(_Empty())
        PStateLayout.write(self, scratch, steps, "set", (new_value,))
        pairs = {key: value for key, value in scratch.pending() if value is not None}
        pairs.pop(self.root.key, None) if self.keyed else None  # the count is kept for both spaces
        if len(self._converted) >= _CONVERTED_KEPT:
            self._converted.clear()
        # Keyed by the old entry's stored bytes too: an old entry is never written again (writes move
        # it first), so the same bytes mean the same entry.
        self._converted[(marker, segment)] = pairs
        return pairs


class MigratingReader:
    """The new key space of a migrating PState, with the entries still in the old space converted."""

    __slots__ = ("_base", "_layout")

    def __init__(self, base: Reader, layout: MigratingLayout) -> None:
        self._base = base
        self._layout = layout

    def get(self, key: bytes) -> bytes | None:
        value = self._base.get(key)
        layout = self._layout
        if value is not None or not key.startswith(layout.new_prefix):
            return value
        segment = _entry_of(layout, key)
        if segment is None:
            return None
        pairs = layout.converted(self._base, segment)
        return None if pairs is None else pairs.get(key)

    def iterate(self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
                ) -> Iterator[tuple[bytes, bytes]]:
        layout = self._layout
        base = self._base.iterate(start, stop, reverse=reverse)
        end = stop if stop is not None else prefix_end(layout.new_prefix)
        if end <= layout.new_prefix or start >= prefix_end(layout.new_prefix):
            return base
        converted = self._converted_pairs(start, end, reverse)
        return heapq.merge(base, converted, key=lambda pair: pair[0], reverse=reverse)

    def _converted_pairs(self, start: bytes, stop: bytes, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        """The converted old entries' pairs in [start, stop), in order, lazily."""
        layout = self._layout
        if not layout.keyed:
            root_pairs = layout.converted(self._base, b"") or {}
            yield from sorted(((k, v) for k, v in root_pairs.items() if start <= k < stop), reverse=reverse)
            return
        new_elements, old_elements = layout.root.base + ENTRY, layout.old.root.base + ENTRY
        new_children = layout.root.base + CHILDREN
        # Which old entries can have keys in [start, stop): by element key, or by the region below one.
        zones: list[tuple[bytes, bytes, bool]] = []  # (low segment bound, high bound, children?) per zone
        for zone_start, children in ((new_elements, False), (new_children, True)):
            zone_stop = prefix_end(zone_start)
            low, high = max(start, zone_start), min(stop, zone_stop)
            if low < high:
                zones.append((low[len(zone_start):], high[len(zone_start):] if high < zone_stop else b"\xff",
                              children))
        if reverse:
            zones.reverse()
        for low, high, children in zones:
            first = old_elements + _segment_floor(low) if children else old_elements + low
            last = old_elements + high if high != b"\xff" else prefix_end(old_elements)
            for old_key, _ in self._base.iterate(first, last, reverse=reverse):
                pairs = layout.converted(self._base, old_key[len(old_elements):])
                if not pairs:
                    continue
                wanted = sorted(((k, v) for k, v in pairs.items()
                                 if start <= k < stop and k.startswith(new_children) == children), reverse=reverse)
                yield from wanted


def _entry_of(layout: MigratingLayout, key: bytes) -> bytes | None:
    """The encoded key of the entry `key` belongs to (b"" for an unkeyed root), or None for the
    partitioned map's count, which is kept for both spaces."""
    if not layout.keyed:
        return b""
    rest = key[len(layout.root.base):]
    if not key.startswith(layout.root.base) or len(rest) < 2:
        return None
    end = fdb.tuple._decode(rest, 1)[1]  # the encoded key is self-delimiting
    return rest[1:end]


def _segment_floor(low: bytes) -> bytes:
    """The encoded key whose region holds `low` (a key inside some entry's region), or `low`."""
    try:
        return low[:fdb.tuple._decode(low, 0)[1]]
    except Exception:  # `low` is a range bound, not inside a region: start from it
        return low


def _is_navigator(step: Any) -> bool:
    return isinstance(step, Navigator)
