"""Schema construction: what is a valid schema, and how mistakes are reported."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import msgspec
import pytest

from headwater.errors import DefinitionError, PathError
from headwater.schema import Leaf, List, Map, Record, Set, as_schema


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Shape(msgspec.Struct):
    sides: int


class Color(enum.Enum):
    RED = "red"


LEAVES = [int, float, str, bytes, bool, None, uuid.UUID, dt.datetime, dt.date, decimal.Decimal, Color, Point, Shape,
          Any, tuple[int, str], list[int], dict[str, int], int | None]


@pytest.mark.parametrize("leaf", LEAVES, ids=repr)
def test_supported_leaves(leaf):
    assert isinstance(as_schema(leaf), Leaf)
    Map(str, leaf)


@pytest.mark.parametrize("bad", [object, list[object], 5, "int", type("Plain", (), {})], ids=repr)
def test_unsupported_leaves_are_named(bad):
    with pytest.raises(DefinitionError, match="is not a supported PState leaf type"):
        Map(str, bad)


def test_uninstantiated_collections_are_explained():
    with pytest.raises(DefinitionError, match="must be called with its arguments"):
        Map(str, Map)


@pytest.mark.parametrize("bad_key", [list, dict[str, int], Point, int | None, tuple], ids=repr)
def test_map_keys_and_set_elements_must_be_encodable(bad_key):
    with pytest.raises(DefinitionError, match="cannot be a key type"):
        Map(bad_key, int)
    with pytest.raises(DefinitionError, match="cannot be a key type"):
        Set(bad_key)


def test_records_need_fields():
    with pytest.raises(DefinitionError, match="at least one field"):
        Record()


def test_split_propagates_upward():
    assert not Map(int, Record(a=int, tags=Set(str))).split
    assert Map(int, Record(a=int, tags=Set(str, subindexed=True))).split
    assert List(Map(str, int, subindexed=True)).split
    assert Map(str, int, subindexed=True).split


def test_repr_and_equality():
    schema = Map(int, Map(str, Record(a=int, tags=Set(str, subindexed=True)), subindexed=True))
    assert repr(schema) == "Map(int, Map(str, Record(a=int, tags=Set(str, subindexed=True)), subindexed=True))"
    assert schema == Map(int, Map(str, Record(a=int, tags=Set(str, subindexed=True)), subindexed=True))
    assert schema != Map(int, Map(str, Record(a=int, tags=Set(str)), subindexed=True))
    assert hash(List(int)) == hash(List(int))


def test_steps_are_checked_against_the_schema():
    schema = Map(int, Record(a=int, xs=List(int), tags=Set(str)))
    assert schema.child(3, "$") == (3, schema.value_schema)
    with pytest.raises(PathError, match=r"key 'x' does not fit Map\(int, .*at \$: expected an int, got str 'x'"):
        schema.child("x", "$")
    record = schema.value_schema
    with pytest.raises(PathError, match=r"has no field 'b'; its fields are a, xs, tags"):
        record.child("b", "$[3]")
    with pytest.raises(PathError, match=r"List\(int\) at \$\[3\]\['xs'\] is indexed by int, got str"):
        record.fields["xs"].child("0", "$[3]['xs']")
    with pytest.raises(PathError, match=r"test membership with .contains"):
        record.fields["tags"].child("t", "$[3]['tags']")
    with pytest.raises(PathError, match="it is a leaf value"):
        record.fields["a"].child("t", "$[3]['a']")
