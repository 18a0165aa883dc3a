"""The msgpack extension types that carry Python values msgpack has no type for (under `Any`).

UUID, Decimal, date, naive datetime, tuple, set and frozenset travel as extension types so that
they come back with their types; `ext_hook` rebuilds them when a value is decoded.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import msgspec

from headwater.errors import SchemaError

__all__ = ["EXT_DATE", "EXT_DECIMAL", "EXT_FROZENSET", "EXT_NAIVE_DATETIME", "EXT_SET", "EXT_TUPLE", "EXT_UUID",
           "ext_hook"]

EXT_UUID, EXT_DECIMAL, EXT_DATE, EXT_NAIVE_DATETIME, EXT_SET, EXT_TUPLE, EXT_FROZENSET = range(1, 8)

_any_decoder: msgspec.msgpack.Decoder | None = None


def ext_hook(code: int, data: memoryview) -> Any:
    """Rebuild the Python values `_any_to_storage` put into extension types."""
    global _any_decoder
    if _any_decoder is None:
        _any_decoder = msgspec.msgpack.Decoder(Any, ext_hook=ext_hook)
    raw = bytes(data)
    if code == EXT_UUID:
        return uuid.UUID(bytes=raw)
    if code == EXT_DECIMAL:
        return decimal.Decimal(raw.decode())
    if code == EXT_DATE:
        return dt.date.fromisoformat(raw.decode())
    if code == EXT_NAIVE_DATETIME:
        return dt.datetime.fromisoformat(raw.decode())
    container = {EXT_SET: set, EXT_TUPLE: tuple, EXT_FROZENSET: frozenset}.get(code)
    if container is not None:
        return container(_any_decoder.decode(raw))
    raise SchemaError(f"stored value has an unknown msgpack extension type {code}; "
                      "was it written by a newer headwater?")
