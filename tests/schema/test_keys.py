"""The key codec: order-preserving, self-delimiting, round-tripping; the hash never changes."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.errors import DefinitionError, SchemaError
from headwater.schema import decode_key, encode_key, key_type_for, stable_hash, task_for_key
from headwater.schema.keys import KeyMismatch

UTC = dt.timezone.utc
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False)
aware_datetimes = st.datetimes(timezones=st.just(UTC))
decimals = st.decimals(allow_nan=False, allow_infinity=False)
int_tuples = st.lists(st.integers(-1000, 1000), max_size=4).map(tuple)
pair_tuples = st.tuples(st.integers(-5, 5), st.text(max_size=3))

ORDERED = {
    "int": ints,
    "str": st.text(),
    "bytes": st.binary(),
    "float": floats,
    "uuid": st.uuids(),
    "datetime": aware_datetimes,
    "naive datetime": st.datetimes(),
    "date": st.dates(),
    "decimal": decimals,
    "int tuple": int_tuples,
    "pair tuple": pair_tuples,
    "bool": st.booleans(),
}


@pytest.mark.parametrize("kind", ORDERED)
@given(data=st.data())
def test_encoding_order_is_value_order(kind, data):
    a, b = data.draw(ORDERED[kind]), data.draw(ORDERED[kind])
    assert (a < b) == (encode_key(a) < encode_key(b))
    assert (a == b) == (encode_key(a) == encode_key(b))


TYPED = {
    int: ints,
    str: st.text(),
    bytes: st.binary(),
    float: floats,
    uuid.UUID: st.uuids(),
    dt.datetime: aware_datetimes,
    dt.date: st.dates(),
    decimal.Decimal: decimals,
    tuple[int, ...]: int_tuples,
    tuple[int, str]: pair_tuples,
    bool: st.booleans(),
}


@pytest.mark.parametrize("key_type", TYPED, ids=repr)
@given(data=st.data())
def test_keys_round_trip_through_their_type(key_type, data):
    value = data.draw(TYPED[key_type])
    decoded = decode_key(encode_key(value), key_type)
    assert decoded == value
    assert type(decoded) is type(value)


@given(st.lists(st.tuples(st.integers(), st.text()), min_size=1, max_size=5))
def test_encodings_are_self_delimiting(steps):
    """A path is the concatenation of its steps' encodings: prefixes never collide."""
    flat = [part for step in steps for part in step]
    assert b"".join(encode_key(part) for part in flat) == b"".join(encode_key(a) + encode_key(b) for a, b in steps)
    import fdb.tuple

    assert list(fdb.tuple.unpack(b"".join(encode_key(part) for part in flat))) == flat


def test_naive_datetime_is_utc_and_decodes_aware():
    naive = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    aware = naive.replace(tzinfo=UTC)
    assert encode_key(naive) == encode_key(aware)
    assert decode_key(encode_key(naive), dt.datetime) == aware
    other_zone = aware.astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert encode_key(other_zone) == encode_key(aware)


def test_enum_keys_encode_by_value():
    class Color(enum.Enum):
        RED = 2
        BLUE = 1

    assert encode_key(Color.RED) == encode_key(2)
    assert decode_key(encode_key(Color.BLUE), Color) is Color.BLUE
    assert key_type_for(Color).check(1) is Color.BLUE


def test_decimals_keep_precision_beyond_the_context():
    value = decimal.Decimal("1.2345678901234567890123456789012345")
    assert decode_key(encode_key(value), decimal.Decimal) == value
    assert encode_key(decimal.Decimal("1.50")) == encode_key(decimal.Decimal("1.5"))


def test_negative_zero_is_zero_and_nan_is_refused():
    assert encode_key(-0.0) == encode_key(0.0)
    with pytest.raises(SchemaError, match="NaN"):
        encode_key(float("nan"))
    with pytest.raises(SchemaError, match="finite"):
        encode_key(decimal.Decimal("Infinity"))


def test_unsupported_key_types_are_refused_with_the_allowed_ones():
    with pytest.raises(SchemaError, match="cannot be a key; keys may be int, str"):
        encode_key(object())
    with pytest.raises(DefinitionError, match="list cannot be a key type"):
        key_type_for(list)


def test_typed_keys_are_strict_about_bool_and_int():
    with pytest.raises(KeyMismatch, match="expected an int, got bool"):
        key_type_for(int).check(True)
    with pytest.raises(KeyMismatch, match="expected a bool, got int"):
        key_type_for(bool).check(1)
    assert key_type_for(float).check(1) == 1.0


def test_tuple_key_bounds_may_be_prefixes():
    keys = key_type_for(tuple[int, str])
    assert keys.check_bound((1,)) == (1,)
    with pytest.raises(KeyMismatch):
        keys.check((1,))
    assert encode_key((1,)) < encode_key((1, "")) < encode_key((1, "zzz")) < encode_key((2,))


# The stable hash partitions data on disk: these values must never change.
PINNED_HASHES = [
    (0, 5420872468942746807),
    (1, 4539993465873621385),
    (-1, 13467934056452568574),
    (2**63, 9444097232852991129),
    ("a", 15519527900485271087),
    ("user-42", 3844442803370108745),
    (b"\x00\xff", 17029553559028599743),
    (1.5, 13465866130900571039),
    (True, 13081081268678926744),
    (None, 16804241149081757544),
    (uuid.UUID(int=1), 17126583190814613113),
    (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), 15392457067028904242),
    (dt.date(2024, 1, 2), 1422419254898569358),
    (decimal.Decimal("12.50"), 4881425307208173718),
    ((1, "a"), 13210265183962787391),
]


@pytest.mark.parametrize("value, expected", PINNED_HASHES, ids=repr)
def test_stable_hash_is_pinned(value, expected):
    assert stable_hash(value) == expected


@given(st.one_of(ints, st.text()), st.integers(1, 64))
def test_task_for_key_is_in_range(value, num_tasks):
    assert 0 <= task_for_key(value, num_tasks) < num_tasks
    assert task_for_key(value, num_tasks) == stable_hash(value) % num_tasks


@given(st.one_of(ints, st.integers(), st.text(), st.binary(), st.uuids()))
def test_fast_paths_agree_with_the_tuple_layer(value):
    import fdb.tuple

    from headwater.schema.keys import unpack_key

    assert encode_key(value) == fdb.tuple.pack((value,))
    assert unpack_key(b"prefix" + encode_key(value), len(b"prefix")) == value


@given(st.lists(st.one_of(ints, st.text(max_size=3)), max_size=4).map(tuple))
def test_tuple_fast_path_agrees_with_the_tuple_layer(value):
    import fdb.tuple

    assert encode_key(value) == fdb.tuple.pack((value,))
