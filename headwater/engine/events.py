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
from headwater.schema.extensions import ext_hook

__all__ = ["EVENT_BYTES_MAX", "EVENT_VERSION_MAX", "VERSION_TAG", "EventCodec", "schema_error"]

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


# Events of a depot whose type was migrated are stored behind a tag: this byte, which msgpack never
# uses, then the depot's event version (the migrations it has had). Untagged bytes are version 0.
VERSION_TAG = 0xC1
EVENT_VERSION_MAX = 255


class EventCodec:
    """Encodes, validates and decodes the events of one depot.

    `version` is the depot's event version: 0 until its type is first migrated, one more per
    migration. `previous` (while a migration rewrites the stored events): the version it comes
    from and the conversion, `fn(old_event_as_plain_data) -> new_event`, that events stored with
    it pass through on decode.
    """

    def __init__(self, depot: DepotDecl, version: int = 0, previous: tuple[int, Any] | None = None) -> None:
        self.depot = depot
        self.label = f"event for depot {depot.module.name}.{depot.name}"
        self.version = version
        self._tag = bytes([VERSION_TAG, version]) if version else b""
        self._previous = previous
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
            data = self._tag + self._encoder.encode(event) if self._tag else self._encoder.encode(event)
        except (TypeError, msgspec.EncodeError, OverflowError) as e:
            raise SchemaError(f"{self.label} cannot be encoded: {e}") from None
        if len(data) > EVENT_BYTES_MAX:
            raise SchemaError(
                f"{self.label} is {len(data):,} bytes, above the limit of {EVENT_BYTES_MAX:,}; "
                "store large payloads elsewhere and append a reference"
            )
        return data, self.decode(data)

    def decode(self, data: bytes) -> Any:
        if data[:1] == b"\xc1" or self.version:
            version, payload = (data[1], data[2:]) if data[:1] == b"\xc1" else (0, data)
            if version != self.version:
                return self._converted(version, payload)
            data = payload
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as e:
            raise schema_error(f"{self.label} does not match {_type_name(self.depot.event_type)}", e) from None
        except msgspec.DecodeError as e:
            raise SchemaError(f"{self.label} is malformed: {e}") from None

    def _converted(self, version: int, payload: bytes) -> Any:
        """An event stored with an earlier version, as the current type: through the migration."""
        if self._previous is None or version != self._previous[0]:
            raise SchemaError(f"{self.label} was stored with event version {version}, and this code reads version "
                              f"{self.version} with no migration from it")
        try:
            old = msgspec.msgpack.decode(payload, ext_hook=ext_hook)
        except msgspec.DecodeError as e:
            raise SchemaError(f"{self.label} is malformed: {e}") from None
        try:
            new = self._previous[1](old)
        except Exception as e:
            raise SchemaError(f"{self.label}: its migration raised {type(e).__name__}: {e}; the function must "
                              "accept every event stored before the update") from e
        try:
            return self._decoder.decode(self._encoder.encode(new))  # validated, as an append would be
        except (TypeError, msgspec.EncodeError, msgspec.ValidationError) as e:
            raise SchemaError(f"{self.label}: its migration returned {new!r:.200}, which does not match "
                              f"{_type_name(self.depot.event_type)}: {e}") from None

    def upgraded(self, data: bytes) -> bytes | None:
        """`data` stored with the previous version, encoded with the current one; None if it is current."""
        if (data[1] if data[:1] == b"\xc1" else 0) == self.version:
            return None
        return self.encode(self.decode(data))[0]

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
