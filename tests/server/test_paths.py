"""JSON paths: every key type survives the trip through JSON and back to the schema's key type."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import headwater as hw
from headwater.errors import PathError
from headwater.server.paths import decode_path

KEYS = {
    int: st.integers(min_value=-(2**63), max_value=2**63),
    str: st.text(),
    bytes: st.binary(),
    uuid.UUID: st.uuids(),
    dt.datetime: st.datetimes(timezones=st.just(dt.timezone.utc)),
    dt.date: st.dates(),
    decimal.Decimal: st.decimals(allow_nan=False, allow_infinity=False),
    tuple[int, str]: st.tuples(st.integers(min_value=0, max_value=2**40), st.text()),
}


@pytest.mark.parametrize("key_type", list(KEYS), ids=lambda t: getattr(t, "__name__", str(t)))
def test_a_key_sent_as_json_comes_back_as_the_same_key(key_type):
    schema = hw.Map(key_type, hw.List(int))

    @given(KEYS[key_type], st.integers(min_value=0, max_value=5))
    def roundtrip(key, index):
        steps = decode_path(schema, msgspec.json.decode(msgspec.json.encode([key, index])))
        assert steps == [key, index] and type(steps[0]) is type(key)

    roundtrip()


def test_record_fields_pass_through():
    schema = hw.Map(str, hw.Record(tags=hw.Map(str, int)))
    assert decode_path(schema, ["a", "tags", "x"]) == ["a", "tags", "x"]


def test_a_path_is_an_array():
    with pytest.raises(PathError, match="JSON array"):
        decode_path(hw.Map(int, int), {"a": 1})


def test_unknown_navigators_and_fields_are_path_errors():
    schema = hw.Map(int, hw.Map(str, int))
    with pytest.raises(PathError, match="unknown navigator"):
        decode_path(schema, [1, {"nav": "everything"}])
    with pytest.raises(PathError, match="takes start, stop, limit, reverse"):
        decode_path(schema, [1, {"nav": "range", "from": "a"}])
