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
    "IDEM_OPEN_PREFIX",
    "OpenRecord",
    "dead_decoder",
    "dead_key",
    "depot_key",
    "PendingTree",
    "decode_pending",
    "idem_key",
    "idem_open_key",
    "idem_results_key",
    "meta_encoder",
    "outbox_decoder",
    "open_record_decoder",
    "pending_key",
    "progress_key",
    "start_key",
]

DEPOT_KEY = struct.Struct(">HQ")
U64 = struct.Struct(">Q")
I64 = struct.Struct(">q")


def depot_key(depot_id: int, offset: int) -> bytes:
    return DEPOT_KEY.pack(depot_id, offset)


def start_key(depot_id: int) -> bytes:
    """The first offset a depot partition still stores (U64), once its retention trimmed some."""
    return b"start/" + DEPOT_KEY.pack(depot_id, 0)[:2]


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


IDEM_OPEN_PREFIX = b"idemopen/"


def idem_open_key(depot_id: int, offset: int) -> bytes:
    """A record appended with an idempotency key whose processing has not finished: its value is an
    `OpenRecord`, so after a crash a repeat still waits for processing and gets every result."""
    return IDEM_OPEN_PREFIX + DEPOT_KEY.pack(depot_id, offset)


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


class OpenRecord(msgspec.Struct, array_like=True):
    """What is known of a keyed record's processing so far: the trees that completed, and their results."""

    results: dict[str, bytes] = {}
    errors: list[tuple[str, str, str]] = []
    done: list[str] = []


class PendingTree(msgspec.Struct, array_like=True):
    """A root invocation that committed with hops or appends still to finish: what a crash must resend,
    and what the root gave its appender (its return value and `ack_return`), which a repeat needs."""

    outbox: list[tuple[int, bytes]]
    root_result: bytes | None = None
    returned: bytes | None = None


_pending_decoder = msgspec.msgpack.Decoder(PendingTree)


def decode_pending(data: bytes) -> PendingTree:
    """A stored pending tree; entries written before results were kept hold only the outbox."""
    try:
        return _pending_decoder.decode(data)
    except msgspec.ValidationError:
        return PendingTree(outbox_decoder.decode(data))


meta_encoder = msgspec.msgpack.Encoder()  # every struct kept in `meta`, and outboxes
outbox_decoder = msgspec.msgpack.Decoder(list[tuple[int, bytes]])
dead_decoder = msgspec.msgpack.Decoder(DeadLetterEntry)
open_record_decoder = msgspec.msgpack.Decoder(OpenRecord)
