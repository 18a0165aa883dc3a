"""What the engine keeps in a task's store besides PState data: its keys and record formats.

Depot records live in the `depot` column family under (depot id, offset). The `meta` column
family holds each topology's progress, the outboxes of trees a crash may cut short, dead
letters, idempotency keys and their results, and the unique-id counter.
"""

from __future__ import annotations

import struct

import msgspec

__all__ = [
    "DEPOT_KEY",
    "I64",
    "U64",
    "UNIQUE_KEY",
    "DeadLetterEntry",
    "dead_decoder",
    "dead_encoder",
    "dead_key",
    "depot_key",
    "idem_key",
    "idem_results_key",
    "outbox_decoder",
    "outbox_encoder",
    "pending_key",
    "progress_key",
]

DEPOT_KEY = struct.Struct(">HQ")
U64 = struct.Struct(">Q")
I64 = struct.Struct(">q")


def depot_key(depot_id: int, offset: int) -> bytes:
    return DEPOT_KEY.pack(depot_id, offset)


def progress_key(topology: str, depot_id: int) -> bytes:
    return b"progress/" + topology.encode() + b"/" + DEPOT_KEY.pack(depot_id, 0)[:2]


def pending_key(topology: str, depot_id: int, offset: int) -> bytes:
    return b"pending/" + topology.encode() + b"/" + DEPOT_KEY.pack(depot_id, offset)


def dead_key(topology: str, dead_id: int) -> bytes:
    return b"dead/" + topology.encode() + b"/" + U64.pack(dead_id)


def idem_key(depot_id: int, key: str) -> bytes:
    return b"idem/" + DEPOT_KEY.pack(depot_id, 0)[:2] + key.encode()


def idem_results_key(depot_id: int, offset: int) -> bytes:
    return b"idemres/" + DEPOT_KEY.pack(depot_id, offset)


UNIQUE_KEY = b"unique"


class DeadLetterEntry(msgspec.Struct, frozen=True):
    """A failed invocation set aside: a depot record's root handler, or one hop of its tree."""

    id: int
    topology: str
    kind: str  # "record" | "hop"
    task: int
    depot: str
    partition: int
    offset: int
    timestamp_us: int
    error_type: str
    traceback: str
    attempts: int
    step: str | None = None
    args: bytes | None = None


dead_encoder = msgspec.msgpack.Encoder()
outbox_encoder = msgspec.msgpack.Encoder()
outbox_decoder = msgspec.msgpack.Decoder(list[tuple[int, bytes]])
dead_decoder = msgspec.msgpack.Decoder(DeadLetterEntry)
