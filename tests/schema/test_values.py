"""Whole values: validated against their schema, encoded with msgpack, read back typed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.errors import SchemaError
from headwater.schema import (
    List,
    Map,
    Record,
    Set,
    decode_value,
    encode_value,
    max_value_bytes,
    set_max_value_bytes,
)

UTC = dt.timezone.utc


@dataclasses.dataclass
class LineItem:
    sku: str
    quantity: int


class Shape(msgspec.Struct):
    sides: int


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def round_trip(schema, value):
    return decode_value(schema, encode_value(schema, value))


@pytest.mark.parametrize(
    "schema, value",
    [
        (int, 5),
        (float, 1.5),
        (str, "héllo"),
        (bytes, b"\x00\x01"),
        (bool, False),
        (None, None),
        (uuid.UUID, uuid.UUID(int=7)),
        (dt.datetime, dt.datetime(2024, 1, 2, tzinfo=UTC)),
        (dt.date, dt.date(2024, 1, 2)),
        (decimal.Decimal, decimal.Decimal("12.345")),
        (Level, Level.HIGH),
        (tuple[int, str], (1, "a")),
        (LineItem, LineItem("x", 2)),
        (Shape, Shape(3)),
        (Map(str, List(int)), {"a": [1, 2], "b": []}),
        (Set(int), {3, 1, 2}),
        (Record(a=int, b=str), {"b": "x"}),
        (List(Record(items=List(LineItem))), [{"items": [LineItem("a", 1)]}, {}]),
    ],
    ids=repr,
)
def test_values_round_trip_typed(schema, value):
    decoded = round_trip(schema, value)
    assert decoded == value
    assert type(decoded) is type(value)


def test_maps_read_back_in_key_order_and_records_in_field_order():
    assert list(round_trip(Map(int, str), {3: "c", -1: "a", 2: "b"})) == [-1, 2, 3]
    assert list(round_trip(Map(str, int), {"b": 1, "a": 2, "B": 3})) == ["B", "a", "b"]
    assert list(round_trip(Record(a=int, b=int, c=int), {"c": 1, "a": 2})) == ["a", "c"]


def test_map_keys_are_canonical():
    naive = dt.datetime(2024, 1, 2)
    assert round_trip(Map(dt.datetime, int), {naive: 1}) == {naive.replace(tzinfo=UTC): 1}
    assert round_trip(Map(float, int), {1: 5}) == {1.0: 5}


ANY_VALUES = [
    1, "s", 1.5, b"b", None, True, [1, [2, "x"]], {"a": {"b": [None]}}, {1: "int keys"},
    uuid.UUID(int=3), decimal.Decimal("1.10"), dt.date(2024, 1, 1), dt.datetime(2024, 1, 1),
    dt.datetime(2024, 1, 1, tzinfo=UTC), (1, (2, "x")), {1, 2}, frozenset({"a"}),
]


@pytest.mark.parametrize("value", ANY_VALUES, ids=repr)
def test_any_round_trips_common_types(value):
    decoded = round_trip(Any, value)
    assert decoded == value
    assert type(decoded) is type(value)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary() | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@given(json_like)
def test_any_round_trips_nested_values(value):
    assert round_trip(Any, value) == value


@pytest.mark.parametrize(
    "schema, value, path, message",
    [
        (int, True, "$", "Expected `int`, got `bool`"),
        (bool, 1, "$", "Expected `bool`, got `int`"),
        (int, 1.0, "$", "Expected `int`, got `float`"),
        (Map(str, int), {"a": "x"}, "$['a']", "Expected `int`, got `str`"),
        (Map(int, int), {"a": 1}, "$", "key 'a' at \\$ does not fit: expected an int"),
        (List(Map(str, List(LineItem))), [{}, {}, {}, {"items": [{"sku": "a", "quantity": "many"}]}],
         "$[3]['items'][0].quantity", "Expected `int`, got `str`"),
        (List(Map(str, List(LineItem))), [{"items": [LineItem("a", "many")]}], "$[0]['items'][0].quantity",
         "Expected `int`, got `str`"),
        (Record(a=int), {"b": 1}, "$['b']", "unknown field 'b' at .*: Record\\(a=int\\) has fields a"),
        (Record(a=int), [1], "$", "expected a dict of its fields"),
        (Set(str), {"a", 1}, "$", "element 1 at \\$ does not fit"),
        (List(int), {1, 2}, "$", "expected a list for List\\(int\\)"),
        (Map(str, Any), {"a": object()}, "$['a']", "cannot be stored"),
        (int, 2**64, "$", "cannot be stored"),
    ],
    ids=lambda x: repr(x)[:40],
)
def test_schema_errors_name_the_path(schema, value, path, message):
    with pytest.raises(SchemaError, match=message) as caught:
        encode_value(schema, value)
    assert caught.value.path == path
    assert path in str(caught.value)


def test_paths_start_where_the_caller_says():
    with pytest.raises(SchemaError) as caught:
        encode_value(Record(qty=int), {"qty": "x"}, path="$[7]['order']")
    assert caught.value.path == "$[7]['order']['qty']"


def test_huge_values_are_refused_with_a_hint():
    previous = set_max_value_bytes(1000)
    try:
        assert max_value_bytes() == 1000
        encode_value(List(int), list(range(100)))
        with pytest.raises(SchemaError, match=r"encodes to \d+ bytes, above the bound of 1000 bytes.*subindexed"):
            encode_value(List(int), list(range(1000)))
    finally:
        set_max_value_bytes(previous)
