"""Backups: a consistent, incremental copy of every module's stores, and laying one out again.

A backup destination holds, for any number of backups:

    files/<xx>/<hash>-<size>   each file of each backed-up store, named by its content and never rewritten
    backups/<id>.json          one manifest per backup: each module's catalog, and per task its files
    latest                     the id of the newest complete backup
    lock                       held (flock) by the one backup or prune writing here now

A backup takes every task of every module at one cut: each host holds its tasks between rounds
(`TaskPause`), and only when all are held does any take a RocksDB checkpoint (hard links of the
immutable SST files, plus a flush of what the memtables hold), after which each task runs again.
The checkpoints are then copied into `files/` outside the pause, skipping every file whose content
is there already (`copy_checkpoint`), so a second backup copies about what was written since the
first. The manifest is written last, synced and renamed into place, then `latest` is renamed over
(`publish`): a backup that crashes before that leaves files nobody names, and the previous backup,
whose files are never rewritten, stays whole.

One writer at a time: a backup (and `prune_backups`) holds an exclusive lock on `lock` until it is
done, and a second is refused at once, naming the first. `prune_backups` deletes the manifests of
all but the newest backups first, then every file no remaining manifest names: a prune that dies
part-way leaves only unnamed files, which the next prune removes.

`restore` checks the manifest's checksum and every file's, and lays the stores out as a data
directory that a cluster deployed over it reattaches to; recovery there is the recovery from a
crash of every task at the cut.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from headwater.client.cluster import BackupInfo
from headwater.errors import BackupError, Unavailable

if TYPE_CHECKING:
    from headwater.cluster.hosts import TaskThread
    from headwater.storage import RocksStore

__all__ = [
    "BACKUP_ATTEMPTS_MAX",
    "BACKUP_FORMAT",
    "BACKUP_PAUSE_MAX_S",
    "CopiedFiles",
    "DestinationLock",
    "TaskPause",
    "copy_checkpoint",
    "describe_backups",
    "new_backup_id",
    "prepare_destination",
    "prune_backups",
    "publish",
    "read_manifest",
    "restore",
    "staging_directory",
]

BACKUP_FORMAT = 1
# How long a backup may hold tasks while it waits for the others' rounds to end; past it, it lets
# all go and tries again. This, plus the checkpoints' own time (a flush of what came since the
# pre-flush, and hard links: milliseconds), is the longest an append waits for a backup.
BACKUP_PAUSE_MAX_S = 0.5
BACKUP_ATTEMPTS_MAX = 5  # cuts tried before a backup gives up (Unavailable)
COPY_CHUNK_BYTES = 1024 * 1024  # files are hashed and copied in reads of this much
STAGING_DIRECTORY = ".backup-staging"  # under a cluster's data path: checkpoints on their way out


@dataclass
class CopiedFiles:
    """One store's checkpoint copied into a destination: its files as a manifest lists them."""

    files: list[list[Any]]  # [name, size, hash]
    files_copied: int = 0
    bytes_copied: int = 0
    files_reused: int = 0
    bytes_reused: int = 0


def new_backup_id(after: str | None = None) -> str:
    """Sortable by time (UTC, to the microsecond), unique by a random tail, and after `after` (the
    newest backup in the destination) even if the clock went back: what `keep=` counts as newest."""
    now = datetime.now(UTC)
    if after is not None:
        stamp = after.split("-", 1)[0]
        # An id to the microsecond follows the previous by 1 µs; one to the second (older versions)
        # by a whole second, since "...05Z" sorts after "...05.000001Z".
        step = timedelta(microseconds=1) if "." in stamp else timedelta(seconds=1)
        try:
            previous = datetime.strptime(stamp, _ID_TIME if "." in stamp else "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            previous = None  # not one of ours: ids sort as they will
        if previous is not None and now < previous + step:
            now = previous + step
    return now.strftime(_ID_TIME) + "-" + secrets.token_hex(3)


_ID_TIME = "%Y%m%dT%H%M%S.%fZ"


def staging_directory(data_path: Path, backup_id: str) -> Path:
    """Where the hosts put a backup's checkpoints: beside the stores, so that they are hard links."""
    return data_path / STAGING_DIRECTORY / backup_id


# ---- the cut: tasks held between rounds ---------------------------------------------------------
class TaskPause:
    """The turns of a host's tasks, held so that none runs a round while the backup takes its cut.

    `take` holds all of them or none; `checkpoint` checkpoints each store and lets its task go at once.
    `expire_after` lets all go by itself if no checkpoint has begun by then (a backup whose
    coordinator went away must not stall appends for longer)."""

    def __init__(self, tasks: Sequence[tuple[Hashable, TaskThread, RocksStore]]) -> None:
        self.tasks = list(tasks)
        self._lock = threading.Lock()
        self._held: list[tuple[Hashable, TaskThread, RocksStore, float]] = []
        self._state = "idle"  # idle -> held -> checkpointing -> done; held -> released (expired or let go)
        self._timer: threading.Timer | None = None

    def flush(self) -> None:
        """Before the cut, so that each checkpoint under it flushes only what came since."""
        for _, _, rocks in self.tasks:
            rocks.flush()

    def take(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            assert self._state == "idle", self._state
            for key, host, rocks in self.tasks:
                if not host.pause(deadline - time.monotonic()):
                    self._let_go()
                    self._state = "idle"
                    return False
                self._held.append((key, host, rocks, time.monotonic()))
            self._state = "held"
            return True

    def expire_after(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self.release)
        self._timer.daemon = True
        self._timer.start()

    def release(self) -> None:
        """Let every task go, if no checkpoint has begun (a retried or abandoned cut)."""
        with self._lock:
            if self._state == "held":
                self._let_go()
                self._state = "released"

    def checkpoint(self, staging: Path, directory_of: Callable[[Hashable], str]) -> dict[Hashable, tuple[Path, float]]:
        """Checkpoint every held store into `staging / directory_of(key)`, letting each task go as soon
        as its checkpoint is taken; per task, (its checkpoint, the seconds it was held)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._state != "held":
                raise Unavailable(f"the backup's hold on the tasks ended before their checkpoints ({self._state}); "
                                  "try the backup again")
            self._state = "checkpointing"
            taken: dict[Hashable, tuple[Path, float]] = {}
            try:
                while self._held:
                    key, host, rocks, since = self._held[0]
                    target = staging / directory_of(key)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(target, ignore_errors=True)
                    rocks.checkpoint(target)
                    self._held.pop(0)
                    host.resume()
                    taken[key] = (target, time.monotonic() - since)
            finally:
                self._let_go()
                self._state = "done"
            return taken

    def _let_go(self) -> None:
        held, self._held = self._held, []
        for _, host, _, _ in held:
            host.resume()


# ---- copying into a destination ------------------------------------------------------------------
class DestinationLock:
    """The one writer of a destination: an exclusive `flock` on `<destination>/lock`, refused at once
    (`BackupError` naming the holder) while another backup or prune holds it. The kernel drops the
    lock with its process, so a writer that crashed leaves none behind."""

    def __init__(self, destination: Path) -> None:
        self._path = destination / "lock"
        self._fd: int | None = None

    def __enter__(self) -> DestinationLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BackupError(f"another backup or prune is writing into {str(self._path.parent)!r} ({holder}); "
                              "wait for it to finish, or back up into another directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # and with it the lock
            self._fd = None


def prepare_destination(destination: Path) -> None:
    """Make the destination's folders; remove what a crashed backup left half written (one backup
    writes into a destination at a time)."""
    (destination / "files").mkdir(parents=True, exist_ok=True)
    (destination / "backups").mkdir(parents=True, exist_ok=True)
    for leftover in [*(destination / "backups").glob("*.tmp"), *(destination / "files").glob("*/*.part")]:
        leftover.unlink(missing_ok=True)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _pooled(destination: Path, digest: str, size: int) -> Path:
    return destination / "files" / digest[:2] / f"{digest}-{size}"


def _copy_file(source: Path, target: Path) -> None:
    """Copy `source` to `target` through a temporary name, synced: `target` is whole or absent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{secrets.token_hex(4)}.part")
    try:
        with open(source, "rb") as src, open(temporary, "wb") as dst:
            while chunk := src.read(COPY_CHUNK_BYTES):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def copy_checkpoint(checkpoint: Path, destination: Path) -> CopiedFiles:
    """Copy a checkpoint's files into `destination/files`, each only if no file of the same content is
    there already; the directories touched are synced before this returns."""
    copied = CopiedFiles(files=[])
    touched: set[Path] = set()
    for path in sorted(checkpoint.iterdir()):
        digest, size = _hash_file(path)
        target = _pooled(destination, digest, size)
        copied.files.append([path.name, size, digest])
        if target.exists() and target.stat().st_size == size:
            copied.files_reused += 1
            copied.bytes_reused += size
            continue
        _copy_file(path, target)
        touched.add(target.parent)
        copied.files_copied += 1
        copied.bytes_copied += size
    for directory in touched:
        _sync_directory(directory)
    return copied


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def publish(destination: Path, backup_id: str, modules: dict[str, Any]) -> Path:
    """Write the manifest (synced, renamed into place), then point `latest` at it the same way."""
    body = {"format": BACKUP_FORMAT, "id": backup_id, "created_s": time.time(), "modules": modules}
    manifest = destination / "backups" / f"{backup_id}.json"
    _write_atomically(manifest, json.dumps({**body, "checksum": _checksum(body)}, indent=1))
    _write_atomically(destination / "latest", backup_id + "\n")
    return manifest


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)


# ---- pruning -----------------------------------------------------------------------------------
def prune_backups(destination: str | os.PathLike[str], *, keep: int) -> dict[str, Any]:
    """Delete all but the `keep` newest backups in `destination`, and every file only they named.

    The backup `latest` names always stays. Nothing is deleted unless every kept backup's manifest
    checks out (a damaged one could name files that would otherwise go). Refused while a backup
    writes into `destination`. Returns `{"kept", "removed"` (backup ids, oldest first)`,
    "files_removed", "bytes_removed"}`.

        hw.prune_backups("backups", keep=7)
    """
    check_keep(keep)
    folder = Path(os.path.abspath(destination))
    if not (folder / "backups").is_dir():
        raise BackupError(f"no backups at {str(folder)!r}: give a directory a backup was written to")
    with DestinationLock(folder):
        return prune_locked(folder, keep)


def check_keep(keep: Any) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep={keep!r} must be a whole number of backups, 1 or more (the newest stay)")


def prune_locked(destination: Path, keep: int) -> dict[str, Any]:
    """`prune_backups` for a writer that holds the destination's lock."""
    ids = describe_backups(destination)
    try:
        latest: str | None = (destination / "latest").read_text().strip()
    except FileNotFoundError:
        latest = None
    kept = sorted(set(ids[-keep:]) | ({latest} if latest in ids else set()))
    named: set[str] = set()
    for backup_id in kept:  # read them all before deleting anything
        for module in read_manifest(destination, backup_id)["modules"].values():
            for files in module["tasks"].values():
                named.update(f"{digest}-{size}" for _, size, digest in files)
    removed = [backup_id for backup_id in ids if backup_id not in kept]
    for backup_id in removed:  # the manifests first: a prune that dies now leaves unnamed files only
        (destination / "backups" / f"{backup_id}.json").unlink(missing_ok=True)
    _sync_directory(destination / "backups")
    files_removed = bytes_removed = 0
    for path in sorted((destination / "files").glob("*/*")):
        if path.name not in named:
            size = path.stat().st_size
            path.unlink()
            files_removed += 1
            bytes_removed += size
    return {"kept": kept, "removed": removed, "files_removed": files_removed, "bytes_removed": bytes_removed}


# ---- reading and restoring -------------------------------------------------------------------
def describe_backups(source: str | os.PathLike[str]) -> list[str]:
    """The ids of the complete backups in `source`, oldest first."""
    folder = Path(source) / "backups"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def read_manifest(source: str | os.PathLike[str], backup: str | None = None) -> dict[str, Any]:
    """The manifest of backup `backup` in `source` (default: the latest), checked against its checksum."""
    source = Path(source)
    if not source.is_dir():
        raise BackupError(f"no backup at {str(source)!r}: it is not a directory; give the destination "
                          "a backup was written to")
    if backup is None:
        try:
            backup = (source / "latest").read_text().strip()
        except FileNotFoundError:
            raise BackupError(f"{str(source)!r} holds no complete backup (no 'latest' file): give the "
                              "destination a backup was written to") from None
    path = source / "backups" / f"{backup}.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"backup {backup!r} is not in {str(source)!r} (its manifest {str(path)!r} is missing); "
                          f"backups there: {describe_backups(source)}") from None
    except ValueError as e:
        raise BackupError(f"the manifest of backup {backup!r} ({str(path)!r}) is corrupt: {e}") from None
    body = {k: v for k, v in manifest.items() if k != "checksum"} if isinstance(manifest, dict) else {}
    if not body or manifest.get("checksum") != _checksum(body):
        raise BackupError(f"the manifest of backup {backup!r} ({str(path)!r}) does not match its checksum: it "
                          "was changed or damaged; restore another backup (see `latest` and backups/)")
    if manifest.get("format") != BACKUP_FORMAT:
        raise BackupError(f"backup {backup!r} has format {manifest.get('format')!r}; this version of headwater "
                          f"reads format {BACKUP_FORMAT}")
    return manifest


def restore(source: str | os.PathLike[str], path: str | os.PathLike[str], *,
            backup: str | None = None) -> dict[str, Any]:
    """Lay out a backup as a data directory at `path`, which must be empty or absent.

    `source` is a directory `cluster.backup` wrote to; `backup` one of its backup ids (default: the
    latest). Every file is checked against the manifest's size and hash as it is copied. A cluster
    opened over `path` (`InProcessCluster(path=...)`, `LocalCluster(path=...)`) and `deploy`ing each
    module reattaches to its data; each task recovers as after a crash at the backup's cut. Returns
    `{"id", "modules": {name: tasks}, "files", "bytes"}`. Raises `BackupError` for a missing,
    incomplete or corrupt backup, and for a non-empty `path`.

        hw.restore("backups", "data-restored")
        with hw.InProcessCluster(path="data-restored") as cluster:
            cluster.deploy(bank)
    """
    manifest = read_manifest(source, backup)
    target = Path(os.path.abspath(path))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"cannot restore into {str(target)!r}: it is not an empty directory; restore into a new "
                          "or empty directory (a restore never mixes with other data)")
    # Laid out beside the target and renamed into place when whole: a restore that fails or dies
    # leaves the target as it was, never a data directory a cluster would open half restored.
    building = target.with_name(f".{target.name}.restoring-{secrets.token_hex(3)}")
    try:
        counted = _lay_out(manifest, Path(source), building)
        if target.exists():
            target.rmdir()
        os.replace(building, target)
        _sync_directory(target.parent)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return {"id": manifest["id"], "modules": {name: len(m["tasks"]) for name, m in manifest["modules"].items()},
            **counted}


def _lay_out(manifest: dict[str, Any], source: Path, target: Path) -> dict[str, int]:
    files = size = 0
    for name, module in manifest["modules"].items():
        directory = target / name
        directory.mkdir(parents=True, exist_ok=True)
        sets = module.get("replication")
        for task, task_files in module["tasks"].items():
            replicas = sets[int(task)][1] if sets else [None]
            for worker in replicas:  # every copy of a replicated task starts as the leader's, all in sync
                single = worker is None or len(replicas) == 1
                store = directory / (f"task-{task}" if single else f"task-{task}-w{worker}")
                for file_name, file_size, digest in task_files:
                    _restore_file(source, manifest["id"], digest, file_size, store / file_name)
                    files += 1
                    size += file_size
        _write_atomically(directory / "module.json", json.dumps(module["catalog"], indent=2))
        if sets:
            restored = [[epoch, replicas, replicas[1:]] for epoch, replicas, _ in sets]
            _write_atomically(directory / "replication.json", json.dumps(restored))
    return {"files": files, "bytes": size}


def _restore_file(source: Path, backup_id: str, digest: str, size: int, target: Path) -> None:
    pooled = _pooled(source, digest, size)
    if not pooled.is_file():
        raise BackupError(f"backup {backup_id!r} is incomplete: file {str(pooled)!r} ({target.name}) is missing; "
                          "restore another backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pooled, target)
    found = _hash_file(target)
    if found != (digest, size):
        raise BackupError(f"backup {backup_id!r} is corrupt: file {str(pooled)!r} ({target.name}) has changed "
                          f"(size {found[1]}, expected {size}); restore another backup")


# ---- what a cluster's backup does, whatever its kind ---------------------------------------------
def task_key_directory(key: Hashable) -> str:
    """The staging folder of one task's checkpoint: `<module>/task-<i>`."""
    assert isinstance(key, tuple), key
    return f"{key[0]}/task-{key[1]}"


def take_cut(pause: TaskPause, staging: Path) -> dict[Hashable, tuple[Path, float]]:
    """Hold the tasks (after flushing their memtables) and checkpoint each, trying again when the
    tasks could not all be held within BACKUP_PAUSE_MAX_S (a long round)."""
    pause.flush()
    for _ in range(BACKUP_ATTEMPTS_MAX):
        if pause.take(BACKUP_PAUSE_MAX_S):
            return pause.checkpoint(staging, task_key_directory)
    raise Unavailable(f"a backup could not hold every task between rounds within {BACKUP_PAUSE_MAX_S}s, "
                      f"{BACKUP_ATTEMPTS_MAX} times (rounds that long: slow handlers); try again")


def module_record(directory: Path) -> dict[str, Any]:
    """What a module's backup holds besides its stores: its catalog (`module.json`) and, replicated,
    the controller's record (`replication.json`)."""
    replication = directory / "replication.json"
    return {"catalog": json.loads((directory / "module.json").read_text()),
            "replication": json.loads(replication.read_text()) if replication.exists() else None}


def finish(destination: Path, backup_id: str, records: dict[str, dict[str, Any]],
           copied: dict[Hashable, CopiedFiles], *, started: float, stall_s: float) -> BackupInfo:
    """Publish the backup's manifest; what it wrote."""
    modules: dict[str, Any] = {}
    for name, record in records.items():
        tasks = record["catalog"]["tasks"]
        missing = [task for task in range(tasks) if (name, task) not in copied]
        if missing:
            raise Unavailable(f"the backup found no copy of task(s) {missing} of module {name!r} (a worker "
                              "restarting); try again")
        modules[name] = {**record, "tasks": {str(task): copied[(name, task)].files for task in range(tasks)}}
    publish(destination, backup_id, modules)
    parts = list(copied.values())
    return BackupInfo(
        id=backup_id, destination=str(destination), modules={name: len(m["tasks"]) for name, m in modules.items()},
        files_copied=sum(p.files_copied for p in parts), bytes_copied=sum(p.bytes_copied for p in parts),
        files_reused=sum(p.files_reused for p in parts), bytes_reused=sum(p.bytes_reused for p in parts),
        duration_s=time.monotonic() - started, stall_s=stall_s)
