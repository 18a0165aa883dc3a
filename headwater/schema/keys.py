"""Order-preserving key encoding and the stable hash that partitions keys.

`encode_key` turns a key into bytes whose bytewise order equals the natural order of keys of
the same type, and whose encodings are self-delimiting, so a storage path is the concatenation
of the encodings of its steps. The codec is the FoundationDB tuple layer (`fdb.tuple`, pure
Python, no server): it is well specified, order-preserving and self-delimiting for ints of any
size, str, bytes, floats, bools, None, UUIDs and nested tuples. Types it lacks are mapped onto
those it has, keeping order:

- `datetime` -> int microseconds since the Unix epoch, UTC. A naive datetime is taken to be UTC;
  keys decode as aware UTC datetimes (equal to the original instant).
- `date` -> int days since 1970-01-01.
- enum members -> their value.
- `Decimal` -> a nested tuple (class, exponent, digits) that sorts like the number (see
  `_decimal_item`); NaN and infinities are rejected.
- `-0.0` is stored as `0.0` (they are equal keys); NaN is rejected (it is not equal to itself).

`decode_key(data, key_type)` rebuilds the typed value using the schema's key type.
`KeyType` is that per-schema knowledge: which values a key position accepts and their
canonical form.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import types
import typing
import uuid
from typing import Any

import fdb.tuple
import xxhash

from headwater.errors import DefinitionError, SchemaError

__all__ = [
    "KeyMismatch",
    "KeyType",
    "decode_key",
    "encode_key",
    "key_type_for",
    "stable_hash",
    "task_for_key",
    "unpack_key",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_MICROSECOND = dt.timedelta(microseconds=1)

# msgpack (used for whole values) holds ints in [-2**63, 2**64); keys are kept to the same
# range so that a key means the same thing in a subindexed and a non-subindexed map.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

# Decimal keys become (class, exponent, digits); negative numbers complement their digits
# and end with a character above every digit so that longer digit strings sort first.
_DECIMAL_NEGATIVE, _DECIMAL_ZERO, _DECIMAL_POSITIVE = 0, 1, 2
_COMPLEMENT = str.maketrans("0123456789", "9876543210")
_NEGATIVE_END = "~"


class KeyMismatch(Exception):
    """A value does not fit a key type. Internal: callers turn it into PathError or SchemaError."""


# --- untyped encoding (by runtime type) --------------------------------------------------------


def encode_key(value: Any) -> bytes:
    """Order-preserving, self-delimiting encoding of one key (by its runtime type)."""
    kind = type(value)
    try:
        if kind is int and _FAST_INT_MIN < value < _FAST_INT_MAX:
            return _pack_int(value)
        if kind is str:
            return b"\x02" + value.encode().replace(b"\x00", b"\x00\xff") + b"\x00"
        if kind is uuid.UUID:
            return b"\x30" + value.bytes  # the tuple layer's UUID code and its 16 bytes
        if kind is tuple and all(type(v) is str or (type(v) is int and _FAST_INT_MIN < v < _FAST_INT_MAX)
                                 for v in value):
            return b"\x05" + b"".join(map(encode_key, value)) + b"\x00"  # a nested tuple
        return fdb.tuple.pack((_tuple_item(value),))
    except UnicodeEncodeError as e:
        raise SchemaError(f"key {value!r} is not valid text: {e}") from e


def unpack_key(data: bytes, offset: int = 0) -> Any:
    """The tuple-layer item of one encoded key starting at `offset` and running to the end of `data`."""
    code = data[offset]
    if code == 0x02:  # str: the terminator is the last byte, since the key runs to the end
        return data[offset + 1 : -1].replace(b"\x00\xff", b"\x00").decode()
    if 0x0C <= code <= 0x1C:  # an int of at most 8 bytes
        length = code - 0x14
        if length >= 0:
            return int.from_bytes(data[offset + 1 : offset + 1 + length], "big")
        return int.from_bytes(data[offset + 1 : offset + 1 - length], "big") - ((1 << (-8 * length)) - 1)
    (item,) = fdb.tuple.unpack(data, offset)
    return item


# The tuple layer's encoding of ints below 2**64 - 1 in magnitude, written out because the
# library's general path costs several microseconds per key (tests check both agree).
_FAST_INT_MIN, _FAST_INT_MAX = -(2**64 - 1), 2**64 - 1


def _pack_int(value: int) -> bytes:
    if value == 0:
        return b"\x14"
    if value > 0:
        length = (value.bit_length() + 7) // 8
        return bytes((0x14 + length,)) + value.to_bytes(length, "big")
    length = ((-value).bit_length() + 7) // 8
    return bytes((0x14 - length,)) + (value + (1 << (8 * length)) - 1).to_bytes(length, "big")


def stable_hash(value: Any) -> int:
    """A 64-bit hash of the key's canonical encoding, the same in every process and release."""
    return xxhash.xxh64_intdigest(encode_key(value))


def task_for_key(value: Any, num_tasks: int) -> int:
    """The task (partition) that owns `value` among `num_tasks`."""
    return stable_hash(value) % num_tasks


def _tuple_item(value: Any) -> Any:
    """Map a key onto a value the tuple layer encodes in the right order."""
    kind = type(value)
    if kind is int or kind is str or kind is bytes or kind is bool or value is None:
        return value
    if kind is float:
        return _float_item(value)
    if isinstance(value, enum.Enum):
        return _tuple_item(value.value)
    if isinstance(value, tuple):
        return tuple(_tuple_item(v) for v in value)
    converter = _CONVERTERS.get(kind) or _converter_for_subclass(kind)
    if converter is None:
        raise SchemaError(
            f"{kind.__name__} value {value!r} cannot be a key; keys may be int, str, bytes, float, bool, "
            "None, UUID, datetime, date, Decimal, enum members or tuples of those"
        )
    return converter(value)


def _float_item(value: float) -> float:
    if math.isnan(value):
        raise SchemaError("NaN cannot be a key: it is not equal to itself, so it could never be found again")
    return value + 0.0  # -0.0 + 0.0 == 0.0: equal keys get equal encodings


def _datetime_item(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // _MICROSECOND


def _date_item(value: dt.date) -> int:
    return value.toordinal() - _EPOCH_ORDINAL


def _decimal_item(value: decimal.Decimal) -> tuple:
    """(class, exponent, digits) with the mantissa normalized to 0.d1d2...dn, so tuples sort like numbers."""
    if not value.is_finite():
        raise SchemaError(f"Decimal {value} cannot be a key; only finite decimals can")
    if value.is_zero():
        return (_DECIMAL_ZERO,)
    # as_tuple and adjusted are exact; normalize() would round to the context's precision.
    sign, digits, _ = value.as_tuple()
    text = "".join(map(str, digits)).rstrip("0")
    exponent = value.adjusted() + 1
    if sign:
        return (_DECIMAL_NEGATIVE, -exponent, text.translate(_COMPLEMENT) + _NEGATIVE_END)
    return (_DECIMAL_POSITIVE, exponent, text)


def _decimal_from_item(item: tuple) -> decimal.Decimal:
    if item[0] == _DECIMAL_ZERO:
        return decimal.Decimal(0)
    negative = item[0] == _DECIMAL_NEGATIVE
    exponent = -item[1] if negative else item[1]
    text = item[2][:-1].translate(_COMPLEMENT) if negative else item[2]
    return decimal.Decimal((int(negative), tuple(map(int, text)), exponent - len(text)))


_CONVERTERS: dict[type, Any] = {
    uuid.UUID: lambda v: v,
    dt.datetime: _datetime_item,
    dt.date: _date_item,
    decimal.Decimal: _decimal_item,
}


def _converter_for_subclass(kind: type) -> Any:
    # datetime before date: datetime is a subclass of date.
    for base in (dt.datetime, dt.date, int, str, bytes, float, uuid.UUID, decimal.Decimal):
        if issubclass(kind, base) and kind is not bool:
            return _CONVERTERS.get(base) or _BUILTIN_CAST[base]
    return None


_BUILTIN_CAST: dict[type, Any] = {int: int, str: str, bytes: bytes, float: lambda v: _float_item(float(v))}


# --- typed keys --------------------------------------------------------------------------------


class KeyType:
    """What one key position of a schema accepts (a Map's keys, a Set's elements).

    `check` returns the canonical form of a fitting value (the form reads give back) or raises
    KeyMismatch; `decode` rebuilds the canonical value from `encode_key` bytes.
    """

    name: str = "key"
    # True when Python's order on canonical values equals the order of their encodings, so
    # sorting a non-subindexed map need not encode every key.
    natural_order: bool = True

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def check_bound(self, value: Any) -> Any:
        """Check a range bound (`keys(start, stop)`); tuple keys also accept a prefix."""
        return self.check(value)

    def from_item(self, item: Any) -> Any:
        return item

    def decode(self, data: bytes) -> Any:
        return self.from_item(unpack_key(data))

    def sort_key(self, canonical: Any) -> Any:
        return canonical if self.natural_order else encode_key(canonical)

    def encode(self, canonical: Any) -> bytes:
        return encode_key(canonical)

    def __repr__(self) -> str:
        return self.name


class _IntKey(KeyType):
    name = "int"

    def check(self, value: Any) -> int:
        if type(value) is not int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise KeyMismatch(_expected("an int", value))
            value = int(value)
        if not _INT_MIN <= value <= _INT_MAX:
            raise KeyMismatch(f"int key {value} is outside the storable range [-2**63, 2**64 - 1]")
        return value


class _FloatKey(KeyType):
    name = "float"

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (float, int)):
            raise KeyMismatch(_expected("a float", value))
        value = float(value)
        if math.isnan(value):
            raise KeyMismatch("NaN cannot be a key: it is not equal to itself")
        return value + 0.0


class _ExactKey(KeyType):
    """Keys of one plain type, taken as they are (str, bytes, bool, UUID)."""

    def __init__(self, kind: type, description: str) -> None:
        self.kind, self.name, self._description = kind, kind.__name__, description

    def check(self, value: Any) -> Any:
        if type(value) is self.kind:
            return value
        if isinstance(value, self.kind) and self.kind is not bool:
            return self.kind(value) if self.kind is not uuid.UUID else value
        raise KeyMismatch(_expected(self._description, value))


class _DatetimeKey(KeyType):
    name = "datetime"

    def check(self, value: Any) -> dt.datetime:
        if not isinstance(value, dt.datetime):
            raise KeyMismatch(_expected("a datetime", value))
        return self.from_item(_datetime_item(value))

    def from_item(self, item: int) -> dt.datetime:
        return _EPOCH + item * _MICROSECOND


class _DateKey(KeyType):
    name = "date"

    def check(self, value: Any) -> dt.date:
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise KeyMismatch(_expected("a date", value))
        return dt.date.fromordinal(value.toordinal())

    def from_item(self, item: int) -> dt.date:
        return dt.date.fromordinal(item + _EPOCH_ORDINAL)


class _DecimalKey(KeyType):
    name = "Decimal"

    def check(self, value: Any) -> decimal.Decimal:
        if not isinstance(value, decimal.Decimal):
            raise KeyMismatch(_expected("a Decimal", value))
        if not value.is_finite():
            raise KeyMismatch(f"Decimal {value} cannot be a key; only finite decimals can")
        return _decimal_from_item(_decimal_item(value))

    def from_item(self, item: tuple) -> decimal.Decimal:
        return _decimal_from_item(item)


class _EnumKey(KeyType):
    natural_order = False  # members are not orderable; their encoded values are

    def __init__(self, kind: type[enum.Enum]) -> None:
        self.kind, self.name = kind, kind.__name__
        for member in kind:
            try:
                encode_key(member.value)
            except SchemaError as e:
                raise DefinitionError(f"enum {kind.__name__} cannot be a key type: member {member}: {e}") from e

    def check(self, value: Any) -> enum.Enum:
        if isinstance(value, self.kind):
            return value
        try:
            return self.kind(value)
        except (ValueError, TypeError):
            raise KeyMismatch(_expected(f"a {self.name} member", value)) from None

    def from_item(self, item: Any) -> enum.Enum:
        return self.kind(item)


class _TupleKey(KeyType):
    natural_order = False  # elements may be enums; compare encodings to be safe

    def __init__(self, elements: tuple[KeyType, ...], variadic: bool, name: str) -> None:
        self.elements, self.variadic, self.name = elements, variadic, name

    def check(self, value: Any) -> tuple:
        return self._check(value, prefix=False)

    def check_bound(self, value: Any) -> tuple:
        return self._check(value, prefix=True)

    def _check(self, value: Any, *, prefix: bool) -> tuple:
        if not isinstance(value, tuple):
            raise KeyMismatch(_expected(f"a {self.name}", value))
        if not self.variadic and (len(value) > len(self.elements) or (not prefix and len(value) < len(self.elements))):
            raise KeyMismatch(f"expected a {self.name} of {len(self.elements)} elements, got {len(value)}: {value!r}")
        return tuple(self._element(i).check(v) for i, v in enumerate(value))

    def from_item(self, item: tuple) -> tuple:
        return tuple(self._element(i).from_item(v) for i, v in enumerate(item))

    def _element(self, index: int) -> KeyType:
        return self.elements[0] if self.variadic else self.elements[index]


class _AnyKey(KeyType):
    """Keys of any type that the tuple layer and msgpack both give back unchanged."""

    name = "Any"
    natural_order = False
    _KINDS = (int, str, bytes, float, bool, type(None))

    def check(self, value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(self.check(v) for v in value)
        if type(value) not in self._KINDS:
            raise KeyMismatch(
                f"a key of type Any must be int, str, bytes, float, bool, None or a tuple of those, "
                f"got {type(value).__name__} {value!r}; declare the key type to use {type(value).__name__} keys"
            )
        if type(value) is int:
            return _INT_KEY.check(value)
        return _float_item(value) if type(value) is float else value


def _expected(what: str, value: Any) -> str:
    return f"expected {what}, got {type(value).__name__} {value!r}"


_INT_KEY = _IntKey()
_PLAIN_KEYS: dict[Any, KeyType] = {
    int: _INT_KEY,
    float: _FloatKey(),
    str: _ExactKey(str, "a str"),
    bytes: _ExactKey(bytes, "bytes"),
    bool: _ExactKey(bool, "a bool"),
    uuid.UUID: _ExactKey(uuid.UUID, "a UUID"),
    dt.datetime: _DatetimeKey(),
    dt.date: _DateKey(),
    decimal.Decimal: _DecimalKey(),
    Any: _AnyKey(),
}


def key_type_for(kind: Any) -> KeyType:
    """The KeyType for a declared key type; DefinitionError if it cannot be a key."""
    if kind in _PLAIN_KEYS:
        return _PLAIN_KEYS[kind]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _EnumKey(kind)
    if typing.get_origin(kind) is tuple:
        return _tuple_key_type(kind)
    raise DefinitionError(
        f"{_type_name(kind)} cannot be a key type; keys may be int, str, bytes, float, bool, uuid.UUID, "
        "datetime, date, Decimal, an enum, typing.Any, or tuple[...] of those"
    )


def _tuple_key_type(kind: Any) -> KeyType:
    args = typing.get_args(kind)
    variadic = len(args) == 2 and args[1] is Ellipsis
    elements = tuple(key_type_for(a) for a in (args[:1] if variadic else args))
    if not elements:
        raise DefinitionError(f"{_type_name(kind)} cannot be a key type: give its element types, e.g. tuple[int, str]")
    return _TupleKey(elements, variadic, _type_name(kind))


def _type_name(kind: Any) -> str:
    if isinstance(kind, type) and not isinstance(kind, types.GenericAlias):
        return kind.__name__
    return repr(kind).replace("typing.", "")


def decode_key(data: bytes, key_type: Any) -> Any:
    """Rebuild a key of the declared `key_type` (a type such as int or UUID, or a KeyType)."""
    if not isinstance(key_type, KeyType):
        key_type = key_type_for(key_type)
    return key_type.decode(data)
