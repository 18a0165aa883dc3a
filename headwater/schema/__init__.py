"""Schemas, validation, and value and key encoding (pure: no I/O).

- `Map`, `List`, `Set`, `Record`: the PState schema nodes (any other type in a schema is a leaf).
- `encode_key`/`decode_key`: the order-preserving key codec; `stable_hash`/`task_for_key`: partitioning.
- `encode_value`/`decode_value`: msgpack values validated against a schema.
"""

from headwater.schema.keys import KeyType, decode_key, encode_key, key_type_for, stable_hash, task_for_key
from headwater.schema.types import Leaf, List, Map, Record, Schema, Set, as_schema
from headwater.schema.values import (
    DEFAULT_MAX_VALUE_BYTES,
    decode_value,
    encode_value,
    max_value_bytes,
    set_max_value_bytes,
)

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "KeyType",
    "Leaf",
    "List",
    "Map",
    "Record",
    "Schema",
    "Set",
    "as_schema",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
    "key_type_for",
    "max_value_bytes",
    "set_max_value_bytes",
    "stable_hash",
    "task_for_key",
]
