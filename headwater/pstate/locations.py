"""Where each part of a PState lives in the sorted key-value store.

Every stored node of a PState has a *location*: a `key` holding either its whole value
(msgpack, when the node is not split) or its header (the element count, when it is split), and a
`base` under which the elements of a split node live:

    element with step s:   key = base + ENTRY + encode_key(s)
                           base = base + CHILDREN + encode_key(s)

So the elements of a split collection are the keys in [base + ENTRY, base + CHILDREN), exactly
one per element, sorted by the order-preserving encoding of their keys: ranges, `limit` and
`reverse` page through them directly, even when each element is itself split (its own elements
sit apart, under CHILDREN). The root of PState number `i` is at `encode_key(i) + ENTRY`, so
PStates sharing a column family never overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec

from headwater.errors import PathError, SchemaError
from headwater.pstate.txn import prefix_end
from headwater.schema import Schema, encode_key
from headwater.schema.types import List, Record, format_step

__all__ = ["CHILDREN", "ENTRY", "Location", "decode_count", "encode_count", "named_on_error", "root_location"]

T = TypeVar("T")

ENTRY = b"\x01"  # an element's own key: its value, or its header when it is split
CHILDREN = b"\x02"  # the region below an element: its elements, when it is split

_count_decoder = msgspec.msgpack.Decoder(int)


def encode_count(count: int) -> bytes:
    return msgspec.msgpack.encode(count)


def decode_count(raw: bytes) -> int:
    return _count_decoder.decode(raw)


@dataclass(slots=True, eq=False)  # not frozen: frozen dataclasses construct slowly, and reads make many
class Location:
    """One stored node: its storage key, the base of its elements, and how to name it."""

    key: bytes
    base: bytes
    schema: Schema
    split: bool
    parent: Location | None
    step: Any  # canonical step from the parent (None at the root)
    # Present even with no key stored: a task's share of a partitioned map is the PState itself,
    # not a value someone set, so it always exists (maybe empty).
    implicit: bool = False
    # Some ancestor is a split list, whose elements writes never create: only then must a write
    # walk up checking that they exist (`stored.require_list_elements`).
    under_split_list: bool = False
    # The locations of a split record's fields, made once for the records a PState's root leads
    # to through fields alone (see `root_location`), since every path through them takes them.
    field_locations: dict[str, Location] | None = None

    def child(self, step: Any, schema: Schema) -> Location:
        if self.field_locations is not None:
            return self.field_locations[step]
        segment = encode_key(step)
        base = self.base
        under_split_list = self.under_split_list or (self.split and isinstance(self.schema, List))
        return Location(
            base + ENTRY + segment, base + CHILDREN + segment, schema, schema.split, self, step, False, under_split_list
        )

    @property
    def path(self) -> str:
        """E.g. "$[42]['items']", for messages (built only when asked for: reads are hot)."""
        return "$" if self.parent is None else format_step(self.parent.path, self.step)

    def element_key(self, step: Any) -> bytes:
        """The storage key of the element `step` (for set elements, which have no schema)."""
        return self.base + ENTRY + encode_key(step)

    @property
    def step_offset(self) -> int:
        """Where the step starts in an element's key: `unpack_key(key, offset)` is its raw tuple-layer item."""
        return len(self.base) + len(ENTRY)

    @property
    def elements(self) -> tuple[bytes, bytes]:
        """The key range holding exactly one key per element of this (split) node."""
        return self.base + ENTRY, self.base + CHILDREN

    @property
    def region(self) -> tuple[bytes, bytes]:
        """The key range of everything below this node (not its own key)."""
        return self.base, prefix_end(self.base)


class _Named(Protocol):
    @property
    def path(self) -> str: ...


def named_on_error(where: _Named, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args, path)`, for a pure `fn` that uses the path of `where` only in its error messages.

    Formatting a path costs more than many whole operations, so `fn` first runs with an empty
    one; only if it raises PathError or SchemaError does it run again with `where.path`, which,
    `fn` being pure, raises the same error, now naming where it happened. (Arguments rather than
    a closure: this runs on every write, and a closure is one more allocation.)
    """
    try:
        return fn(*args, "")
    except (PathError, SchemaError):
        pass
    return fn(*args, where.path)


def root_location(schema: Schema, pstate_id: int, *, partitioned: bool) -> Location:
    """The root of PState `pstate_id`; a partitioned map's root is split and always present."""
    prefix = encode_key(pstate_id)
    root = Location(prefix + ENTRY, prefix + CHILDREN, schema, schema.split or partitioned, None, None, partitioned)
    return _with_field_locations(root)


def _with_field_locations(location: Location) -> Location:
    """`location`, given the locations of its fields if it is a split record (and so on below them)."""
    if location.split and isinstance(location.schema, Record):
        fields = location.schema.fields
        location.field_locations = {name: _with_field_locations(location.child(name, fields[name])) for name in fields}
    return location
