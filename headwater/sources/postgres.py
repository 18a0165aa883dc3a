"""`PostgresChanges`: an external depot fed by PostgreSQL logical decoding.

The reader peeks at a logical replication slot with the built-in `pgoutput` plugin over plain SQL
(`pg_logical_slot_peek_binary_changes`), decodes pgoutput's messages, and advances the slot only
to what the depot has durably ingested, so PostgreSQL keeps the WAL a restarted task still needs.
A position is (end LSN of the change's transaction, index of the change in it, whether it is the
transaction's last): transactions arrive in commit order, so positions only grow.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec

from headwater.engine.sources import Source, SourceReader
from headwater.errors import DefinitionError

__all__ = ["Change", "PostgresChanges"]

_POSTGRES_EPOCH_US = 946_684_800_000_000  # PostgreSQL counts time from 2000-01-01 UTC
PEEK_EVERY_S = 0.05  # how often an idle reader looks at the slot again within one read's wait


class Change(msgspec.Struct):
    """One row change: `op` is "insert", "update", "delete" or "truncate"; `row` the new row (insert,
    update) or the old key (delete); `old` the old key of an update that changed it (replica identity).
    Columns of common types arrive typed (bool, int, float, json); others as PostgreSQL's text.
    `lsn` is the end of the transaction's commit record in the WAL, `xid` its transaction id."""

    table: str
    op: str
    row: dict[str, Any]
    old: dict[str, Any] | None = None
    lsn: str = ""
    xid: int = 0


class PostgresChanges(Source):
    """The changes to the tables of a PostgreSQL publication, from a logical replication slot.

    Needs `wal_level=logical` on the server and a publication (`CREATE PUBLICATION shop FOR TABLE
    users, orders`). The slot (default `headwater_<publication>`) is created with the `pgoutput`
    plugin on first use, and streams what commits after that: rows that existed before are not
    copied. Events are `hw.sources.Change`; status shows the lag in WAL bytes. A slot keeps the
    WAL it has not confirmed, so drop it (`SELECT pg_drop_replication_slot('...')`) when the module
    that reads it is destroyed.

        changes = m.external_depot("changes", hw.sources.PostgresChanges(dsn, "shop"), hw.sources.Change)
    """

    lag_unit = "bytes"

    def __init__(self, dsn: str, publication: str, *, slot: str | None = None) -> None:
        if not publication or not publication.replace("_", "").isalnum():
            raise DefinitionError(f"PostgresChanges: publication={publication!r} must be a plain identifier")
        self.dsn = dsn
        self.publication = publication
        self.slot = slot or f"headwater_{publication}"
        if not self.slot.replace("_", "").isalnum() or self.slot != self.slot.lower():
            raise DefinitionError(f"PostgresChanges: slot={self.slot!r} must be lower-case letters, digits and _")
        self.partitions = 1

    def open(self, partition: int) -> SourceReader:
        return _Reader(self)

    def describe(self) -> str:
        parts = urlsplit(self.dsn)
        where = f"{parts.hostname}:{parts.port}{parts.path}" if parts.hostname else "local"
        return f"PostgresChanges({where}, {self.publication}, slot {self.slot})"


class _Reader(SourceReader):
    def __init__(self, source: PostgresChanges) -> None:
        try:
            import psycopg
        except ImportError as e:
            raise ImportError("hw.sources.PostgresChanges needs psycopg: pip install 'headwater[sources]'") from e
        self._source = source
        self._connection = psycopg.connect(source.dsn, autocommit=True)
        self._pending: list[tuple[list[Any], Change, int]] = []  # decoded past what the last read returned
        try:
            self._prepare()
        except BaseException:
            self._connection.close()
            raise

    def _prepare(self) -> None:
        """Check the publication exists, and create the slot if it does not."""
        source = self._source
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (source.publication,))
            if cursor.fetchone() is None:
                raise LookupError(f"PostgreSQL has no publication {source.publication!r}: create it, e.g. "
                                  f"CREATE PUBLICATION {source.publication} FOR TABLE my_table")
            cursor.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (source.slot,))
            if cursor.fetchone() is None:
                cursor.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (source.slot,))

    def read(self, after: Any, *, records_max: int, wait_s: float) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + wait_s
        while True:
            if self._pending and after is not None and _follows(self._pending[0][0], after):
                changes = self._pending
            else:
                changes = self._peek(after, records_max)
            if changes or time.monotonic() >= deadline:
                self._pending = changes[records_max:]
                return changes[:records_max]
            time.sleep(PEEK_EVERY_S)

    def _peek(self, after: Any, records_max: int) -> list[tuple[list[Any], Change, int]]:
        """Decode the slot's transactions; the changes after `after`. The slot moves past every
        transaction whose changes are all at or before `after` (ingested, and durable by now)."""
        source = self._source
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, 'proto_version', '1', "
                           "'publication_names', %s)", (source.slot, records_max, source.publication))
            transactions = _Decoder().transactions(bytes(row[0]) for row in cursor.fetchall())
            changes: list[tuple[list[Any], Change, int]] = []
            done_lsn = None  # the end of the last transaction of which nothing is left to ingest
            for end_lsn, committed_us, rows in transactions:  # a change's timestamp is its commit's
                fresh = [([end_lsn, index, index == len(rows) - 1], change, committed_us)
                         for index, change in enumerate(rows) if after is None or [end_lsn, index] > list(after[:2])]
                if not fresh and not changes:
                    done_lsn = end_lsn
                changes.extend(fresh)
            if done_lsn is not None:
                cursor.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (source.slot, _lsn_text(done_lsn)))
        return changes

    def lag(self, after: Any) -> int | None:
        with self._connection.cursor() as cursor:
            if after is None:
                cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM "
                               "pg_replication_slots WHERE slot_name = %s", (self._source.slot,))
            else:
                cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (_lsn_text(after[0]),))
            row = cursor.fetchone()
        return max(0, int(row[0])) if row and row[0] is not None else None

    def close(self) -> None:
        self._connection.close()


def _follows(position: list[Any], after: list[Any]) -> bool:
    """`position` is the change right after `after`: the next in its transaction, or a next transaction's first."""
    if position[0] == after[0]:
        return bool(position[1] == after[1] + 1)
    return bool(after[2]) and position[1] == 0 and position[0] > after[0]


def _lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


_TYPES: dict[int, Any] = {16: lambda v: v == "t", 20: int, 21: int, 23: int, 700: float, 701: float, 114: json.loads,
                          3802: json.loads}


class _Decoder:
    """pgoutput protocol version 1, the messages of one peek: transactions as (end LSN, changes)."""

    def __init__(self) -> None:
        self._relations: dict[int, tuple[str, list[str], list[int], list[bool]]] = {}

    def transactions(self, messages: Any) -> list[tuple[int, int, list[Change]]]:
        """(end LSN, commit time in microseconds since the Unix epoch, changes) of each transaction."""
        found: list[tuple[int, int, list[Change]]] = []
        rows: list[Change] = []
        xid = 0
        for data in messages:
            kind, body = data[:1], memoryview(data)[1:]
            if kind == b"B":
                rows, xid = [], struct.unpack_from(">qqi", body)[2]
            elif kind == b"C":
                _, _, end_lsn, committed = struct.unpack_from(">bqqq", body)
                for change in rows:
                    change.lsn, change.xid = _lsn_text(end_lsn), xid
                found.append((end_lsn, committed + _POSTGRES_EPOCH_US, rows))
            elif kind == b"R":
                self._relation(body)
            elif kind in (b"I", b"U", b"D"):
                rows.append(self._change(kind, body))
            elif kind == b"T":
                count, _ = struct.unpack_from(">ib", body)
                oids = struct.unpack_from(f">{count}i", body, 5)
                rows.extend(Change(self._relations[oid][0], "truncate", {}) for oid in oids)
        return found

    def _relation(self, body: memoryview) -> None:
        (oid,) = struct.unpack_from(">i", body)
        offset = 4
        namespace, offset = _string(body, offset)
        name, offset = _string(body, offset)
        offset += 1  # replica identity setting
        (count,) = struct.unpack_from(">h", body, offset)
        offset += 2
        columns, types, keys = [], [], []
        for _ in range(count):
            keys.append(bool(body[offset] & 1))  # flags: 1 = part of the replica identity (the key)
            column, offset = _string(body, offset + 1)
            type_oid, _ = struct.unpack_from(">ii", body, offset)
            offset += 8
            columns.append(column)
            types.append(type_oid)
        self._relations[oid] = (f"{namespace}.{name}", columns, types, keys)

    def _change(self, kind: bytes, body: memoryview) -> Change:
        (oid,) = struct.unpack_from(">i", body)
        table, columns, types, keys = self._relations[oid]
        offset, old = 4, None
        marker = bytes(body[offset:offset + 1])
        if marker in (b"K", b"O"):
            old, offset = _tuple(body, offset + 1, columns, types)
            if marker == b"K":  # the key's columns are sent, the others as nulls: keep the key
                old = {column: value for (column, value), key in zip(old.items(), keys, strict=True) if key}
        if kind == b"D":
            return Change(table, "delete", old or {})
        new, offset = _tuple(body, offset + 1, columns, types)  # after the 'N'
        return Change(table, "insert" if kind == b"I" else "update", new, old)


def _string(body: memoryview, offset: int) -> tuple[str, int]:
    end = bytes(body[offset:]).index(b"\0") + offset
    return bytes(body[offset:end]).decode(), end + 1


def _tuple(body: memoryview, offset: int, columns: list[str], types: list[int]) -> tuple[dict[str, Any], int]:
    (count,) = struct.unpack_from(">h", body, offset)
    offset += 2
    row: dict[str, Any] = {}
    for index in range(count):
        kind = bytes(body[offset:offset + 1])
        offset += 1
        if kind == b"n":
            row[columns[index]] = None
        elif kind == b"t":
            (size,) = struct.unpack_from(">i", body, offset)
            text = bytes(body[offset + 4:offset + 4 + size]).decode()
            offset += 4 + size
            convert = _TYPES.get(types[index])
            row[columns[index]] = convert(text) if convert else text
        # b"u": an unchanged TOASTed value, not sent: the column is left out
    return row, offset
