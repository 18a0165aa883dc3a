"""Depot events: validation against the declared type, encoding, partition keys.

An event is validated by encoding it with msgspec and decoding the bytes back into the
declared type: the decoder is strict, so what a handler later receives is exactly what the
schema promises, and the appender's object is never shared with the task that processes it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from headwater.engine.definitions import DepotDecl
from headwater.errors import SchemaError

__all__ = ["EVENT_BYTES_MAX", "EventCodec", "schema_error"]

# A single event larger than this is refused: depot records are read whole, and a record this
# large belongs in a blob store with its key in the event.
EVENT_BYTES_MAX = 16 * 1024 * 1024

_AT = re.compile(r" - at `([^`]*)`$")


def schema_error(what: str, error: Exception) -> SchemaError:
    """Translate a msgspec error into a SchemaError naming the offending field."""
    text = str(error)
    match = _AT.search(text)
    path = match.group(1) if match else "$"
    detail = _AT.sub("", text)
    where = f" at {path}" if path != "$" else ""
    return SchemaError(f"{what}: {detail}{where}", path=path)


def _enc_hook(value: Any) -> Any:
    raise TypeError(f"values of type {type(value).__name__} cannot be stored; "
                    "use a dataclass, msgspec.Struct or builtin type")


class EventCodec:
    """Encodes, validates and decodes the events of one depot."""

    def __init__(self, depot: DepotDecl) -> None:
        self.depot = depot
        self.label = f"event for depot {depot.module.name}.{depot.name}"
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        try:
            self._decoder = msgspec.msgpack.Decoder(depot.event_type)
            self.json_decoder = msgspec.json.Decoder(depot.event_type)
        except TypeError as e:
            from headwater.errors import DefinitionError

            raise DefinitionError(f"depot {depot.name!r}: event type {depot.event_type!r} is not supported: {e}") from e

    def encode(self, event: Any) -> tuple[bytes, Any]:
        """Validate `event`; return its encoding and the validated copy a handler would see."""
        try:
            data = self._encoder.encode(event)
        except (TypeError, msgspec.EncodeError, OverflowError) as e:
            raise SchemaError(f"{self.label} cannot be encoded: {e}") from None
        if len(data) > EVENT_BYTES_MAX:
            raise SchemaError(
                f"{self.label} is {len(data):,} bytes, above the limit of {EVENT_BYTES_MAX:,}; "
                "store large payloads elsewhere and append a reference"
            )
        return data, self.decode(data)

    def decode(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as e:
            raise schema_error(f"{self.label} does not match {_type_name(self.depot.event_type)}", e) from None
        except msgspec.DecodeError as e:
            raise SchemaError(f"{self.label} is malformed: {e}") from None

    def from_json(self, body: bytes) -> tuple[bytes, Any]:
        try:
            event = self.json_decoder.decode(body)
        except msgspec.ValidationError as e:
            raise schema_error(f"{self.label} does not match {_type_name(self.depot.event_type)}", e) from None
        except msgspec.DecodeError as e:
            raise SchemaError(f"{self.label} is not valid JSON: {e}") from None
        return self.encode(event)

    def partition_key(self, event: Any) -> Any:
        partition_by = self.depot.partition_by
        if callable(partition_by):
            return partition_by(event)
        assert isinstance(partition_by, str)
        if isinstance(event, dict):
            if partition_by not in event:
                raise SchemaError(f"{self.label} has no field {partition_by!r} to partition by",
                                  path=f"$.{partition_by}")
            return event[partition_by]
        return getattr(event, partition_by)


def _type_name(event_type: Any) -> str:
    return getattr(event_type, "__name__", repr(event_type))
