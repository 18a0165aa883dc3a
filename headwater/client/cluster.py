"""`hw.Cluster`: the one interface every kind of cluster offers, whatever hosts its tasks.

`InProcessCluster` (threads of this process) and `LocalCluster` (worker processes) implement
it, and so will a cluster on Ray; the HTTP server, the CLI and the web UI are written against it
and serve any of them. `isinstance(x, hw.Cluster)` checks that an object has its methods.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from headwater.client.api import DeadLetter, DepotClient
from headwater.engine.definitions import Module
from headwater.engine.runtime import ModuleRuntime

__all__ = ["BackupInfo", "Cluster", "ModuleInfo"]


@dataclass(frozen=True)
class BackupInfo:
    """What `cluster.backup(dest)` wrote: the backup's id, the modules and their task counts,
    files and bytes copied against reused from earlier backups, how long it took, and the longest
    any task was held for the cut (`stall_s`: what an append could have waited; a cut given up
    because a round ran long held tasks at most `BACKUP_PAUSE_MAX_S` more). With `keep=`, the
    older backups it removed and the bytes of the files only they named (`backups_removed`,
    `bytes_removed`)."""

    id: str
    destination: str
    modules: dict[str, int]
    files_copied: int
    bytes_copied: int
    files_reused: int
    bytes_reused: int
    duration_s: float
    stall_s: float
    backups_removed: list[str] = field(default_factory=list)
    bytes_removed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupInfo:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


class ModuleInfo(str):
    """A deployed module, as `cluster.modules()` lists it: its name (it *is* that string, so it
    compares, sorts and formats as the name) with its `version`, `tasks` and `replication`.

        [m.version for m in cluster.modules()]   # e.g. [1, 3]: bank was updated twice
        "bank" in cluster.modules()              # True

    The version is 1 at first deploy and grows by one at each `update`.
    """

    version: int
    tasks: int
    replication: int

    def __new__(cls, name: str, *, version: int, tasks: int, replication: int = 1) -> ModuleInfo:
        info = super().__new__(cls, name)
        info.version, info.tasks, info.replication = version, tasks, replication
        return info

    @property
    def name(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return (f"ModuleInfo({str(self)!r}, version={self.version}, tasks={self.tasks}, "
                f"replication={self.replication})")

    def __reduce__(self) -> Any:
        return _module_info, (str(self), self.version, self.tasks, self.replication)


def _module_info(name: str, version: int, tasks: int, replication: int) -> ModuleInfo:
    return ModuleInfo(name, version=version, tasks=tasks, replication=replication)


@runtime_checkable
class Cluster(Protocol):
    """What every cluster does: deploy and evolve modules, hand out clients, report on its tasks.

        def load(cluster: hw.Cluster) -> None:       # any kind: in process, worker processes, ...
            cluster.deploy(bank, tasks=4)
            cluster.depot("bank", "deposits").append(Deposit(1, 100))
    """

    def deploy(self, module: Module, *, tasks: int | None = None, replication: int | None = None,
               delete: Sequence[str] = ()) -> None:
        """Run `module` with `tasks` tasks, each kept on `replication` workers (default 1); over
        existing data, reattach to it (same task count and replication), checked as by `update`."""
        ...

    def update(self, module: Module, *, delete: Sequence[str] = (), dry_run: bool = False) -> ModuleInfo:
        """Replace a deployed module's code with a new version of the same name, keeping its data;
        a change stored data cannot follow raises `DefinitionError` unless its name is in `delete`.
        Returns the module with its new version (`dry_run`: only checks)."""
        ...

    def apply_app(self, source: bytes | str, *, filename: str = "app.py", delete: Sequence[str] = (),
                  dry_run: bool = False, tasks: int = 1) -> list[dict[str, Any]]:
        """Update (or deploy) every module an app file's source defines, all checked first."""
        ...

    def destroy(self, name: str) -> None:
        """Stop a module and delete all its data."""
        ...

    def modules(self) -> list[ModuleInfo]:
        """The deployed modules, sorted by name: each is its name, with its version and task count."""
        ...

    def depot(self, module: str, depot: str) -> DepotClient:
        """A client of one depot: append, read and tail."""
        ...

    def pstate(self, module: str, pstate: str, *, task: int | None = None) -> Any:
        """A read-only view of one PState."""
        ...

    def query(self, module: str, name: str) -> Callable[..., Any]:
        """A query of `module` as a function."""
        ...

    def dead_letters(self, module: str, topology: str) -> list[DeadLetter]:
        """The failed invocations of one topology, retriable."""
        ...

    def status(self) -> dict[str, list[dict[str, Any]]]:
        """Per module, per task: where it runs and whether it answers."""
        ...

    def migrations(self, module: str) -> list[dict[str, Any]]:
        """The module's PState migrations: per PState, its ids and the entries rewritten so far."""
        ...

    def progress(self, module: str) -> dict[str, dict[str, list[int]]]:
        """{topology: {depot: [next offset to process, per partition]}}."""
        ...

    def backup(self, destination: str | os.PathLike[str], *, keep: int | None = None) -> BackupInfo:
        """Write a consistent, incremental backup of every module to `destination` (a path where
        the tasks run); `hw.restore` lays it out as a data directory again. `keep=N` then deletes
        all but the N newest backups there (`hw.prune_backups`)."""
        ...

    def runtime(self, module: str) -> ModuleRuntime:
        """The compiled definition of a deployed module, for tools built on a cluster (the HTTP
        server describes its depots, PStates and queries from it)."""
        ...

    def close(self) -> None:
        """Stop every module's tasks; later calls raise `Unavailable`."""
        ...

    def __enter__(self) -> Cluster: ...

    def __exit__(self, *exc: object) -> None: ...
