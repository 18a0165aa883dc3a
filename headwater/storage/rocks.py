"""RocksDB store adapter on rocksdict.

Keys and values are raw bytes (``raw_mode``). Every driver exception is translated into
``StorageError`` here, so nothing above this layer knows RocksDB exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import rocksdict

from headwater.errors import StorageError, Unavailable
from headwater.storage.base import COLUMN_FAMILIES, Batch, Reader, Store

__all__ = ["RocksStore"]


def _options() -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    # ZSTD, not the default Snappy: events and PState values repeat field names and shapes, and
    # ZSTD stores them in about a quarter less disk (registration: 107 against 145 bytes per
    # event). It runs in RocksDB's background flush and compaction, off the interpreter lock.
    options.set_compression_type(rocksdict.DBCompressionType.zstd())
    return options


class _RocksReader(Reader):
    # A reader holds its column family until the store closes and clears it (`release`), so that
    # closing drops the last reference to the database and releases its lock file.
    __slots__ = ("_family",)

    def __init__(self, family: rocksdict.Rdict) -> None:
        self._family: rocksdict.Rdict | None = family

    def release(self) -> None:
        self._family = None

    @property
    def _cf(self) -> rocksdict.Rdict:
        family = self._family
        if family is None:
            raise Unavailable("the store is closed; reopen the cluster to read again")
        return family

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._cf.get(key)
        except rocksdict.DbClosedError as e:
            raise Unavailable("the store is closed") from e

    def iterate(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        # The iterator pins an implicit snapshot when created: one consistent committed state.
        try:
            it = self._cf.iter()
        except rocksdict.DbClosedError as e:
            raise Unavailable("the store is closed") from e
        return _forward(it, start, stop) if not reverse else _backward(it, start, stop)


def _forward(it: rocksdict.RdictIter, start: bytes, stop: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    it.seek(start)
    while it.valid():
        key = it.key()
        if stop is not None and key >= stop:
            return
        yield key, it.value()
        it.next()


def _backward(it: rocksdict.RdictIter, start: bytes, stop: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    if stop is None:
        it.seek_to_last()
    else:
        it.seek_for_prev(stop)
        if it.valid() and it.key() >= stop:
            it.prev()
    while it.valid():
        key = it.key()
        if key < start:
            return
        yield key, it.value()
        it.prev()


# RocksDB's words for the two ways its LOCK file can be taken (env/io_posix.cc): by this process,
# which RocksDB tracks itself, or by another, whose fcntl lock refused ours.
_LOCKED_HERE = "lock hold by current process"
_LOCKED_ELSEWHERE = "While lock file"
_COMMAND_CHARS_MAX = 200  # a holder's command line is cut to this in the message


def _open_failure(path: str, detail: str) -> str:
    """The message for a store that would not open, naming who holds a locked one and what to do."""
    if _LOCKED_HERE in detail:
        return (f"the store at {path!r} is already open in this process (pid {os.getpid()}): another cluster "
                "uses the same data directory. Close that cluster first (leave its `with` block or call "
                "close()), or give this one another data directory")
    if _LOCKED_ELSEWHERE in detail:
        holder = _lock_holder(os.path.join(path, "LOCK"))
        who = "another process" if holder is None else f"process {holder}" + (
            f" ({command})" if (command := _command_line(holder)) else "")
        stop = "stop it" if holder is None else f"stop it (Ctrl-C where it runs, or `kill {holder}`)"
        return (f"the store at {path!r} is locked by {who}: a data directory serves one process at a time. "
                f"To use this data, {stop} and try again; to run alongside it, use another data directory")
    return f"cannot open the store at {path!r}: {detail}"


def _lock_holder(lock_file: str) -> int | None:
    """The pid holding the lock on `lock_file`, where the system lists locks (Linux's /proc/locks), else None."""
    # Read from the list, never by opening the file: a process's fcntl locks drop when it closes any
    # descriptor of the file, so a probe must not touch a file this process might hold.
    try:
        stat = os.stat(lock_file)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:  # "1: POSIX  ADVISORY  WRITE 8872 fe:00:2154805 0 EOF"; a waiter's line has "->" after "1:"
        fields = line.split()
        if "->" not in fields and len(fields) >= 6 and fields[5] == inode and fields[4].isdigit():
            return int(fields[4])
    return None


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return ""
    command = " ".join(w.decode(errors="replace") for w in words if w)
    return command if len(command) <= _COMMAND_CHARS_MAX else command[:_COMMAND_CHARS_MAX] + "…"


class RocksStore(Store):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        try:
            families = {name: _options() for name in COLUMN_FAMILIES}
            self._db = rocksdict.Rdict(self.path, options=_options(), column_families=families)
        except Exception as e:  # rocksdict raises plain exceptions for lock/corruption problems
            raise StorageError(_open_failure(self.path, str(e))) from e
        self._families = {name: self._db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        self._readers = {name: _RocksReader(self._families[name]) for name in COLUMN_FAMILIES}
        self._no_sync = rocksdict.WriteOptions()
        self._closed = False

    def reader(self, column_family: str) -> Reader:
        return self._readers[column_family]

    def write(self, batch: Batch, *, sync: bool) -> None:
        if self._closed:
            raise Unavailable("the store is closed; reopen the cluster to write again")
        write_batch = rocksdict.WriteBatch(raw_mode=True)
        handles = self._handles
        for column_family, start, stop in batch.range_deletions:
            write_batch.delete_range(start, stop, handles[column_family])
        for column_family, key, value in batch.operations:
            if value is None:
                write_batch.delete(key, handles[column_family])
            else:
                write_batch.put(key, value, handles[column_family])
        try:
            self._db.write(write_batch, self._no_sync)
        except Exception as e:
            raise StorageError(f"write to the store at {self.path!r} failed: {e}") from e
        if sync:
            self.sync()

    def sync(self) -> None:
        # A synced write holds the GIL through its fsync, stalling every other thread of the
        # process; syncing the WAL separately gives the same durability and releases the GIL.
        if self._closed:
            raise Unavailable("the store is closed")
        try:
            self._db.flush_wal(True)
        except Exception as e:
            raise StorageError(f"syncing the store at {self.path!r} failed: {e}") from e

    def compact(self, column_family: str, start: bytes, stop: bytes) -> None:
        """Flush and compact [start, stop) of a column family now, so deleted records leave the disk."""
        if self._closed:
            raise Unavailable("the store is closed")
        try:
            # Trimmed records may still sit in a memtable, and so in the write-ahead log, which
            # RocksDB keeps until every column family written with them is flushed: flush them all
            # (the log files go), then compact the range away.
            for family in self._families.values():
                family.flush(True)
            self._families[column_family].compact_range(start, stop)
        except Exception as e:
            raise StorageError(f"compacting the store at {self.path!r} failed: {e}") from e

    def flush(self) -> None:
        """Write every column family's memtable to files now (so a checkpoint soon after has little to flush)."""
        if self._closed:
            raise Unavailable("the store is closed")
        try:
            for family in self._families.values():
                family.flush(True)
        except Exception as e:
            raise StorageError(f"flushing the store at {self.path!r} failed: {e}") from e

    def checkpoint(self, destination: str | os.PathLike[str]) -> None:
        """A consistent copy of the whole store at `destination` (hard links where it can), as of now."""
        if self._closed:
            raise Unavailable("the store is closed")
        try:
            rocksdict.Checkpoint(self._db).create_checkpoint(os.fspath(destination))
        except Exception as e:
            raise StorageError(f"copying the store at {self.path!r} to {os.fspath(destination)!r} failed: {e}") from e

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._families = {}
        for reader in self._readers.values():
            reader.release()
        self._handles = {}
        self._db.close()
