"""`hw.Cluster`: the one interface every kind of cluster offers, whatever hosts its tasks.

`InProcessCluster` (threads of this process) and `LocalCluster` (worker processes) implement
it, and so will a cluster on Ray; the HTTP server, the CLI and the web UI are written against it
and serve any of them. `isinstance(x, hw.Cluster)` checks that an object has its methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from headwater.client.api import DeadLetter, DepotClient
from headwater.engine.definitions import Module
from headwater.engine.runtime import ModuleRuntime

__all__ = ["Cluster"]


@runtime_checkable
class Cluster(Protocol):
    """What every cluster does: deploy and evolve modules, hand out clients, report on its tasks.

        def load(cluster: hw.Cluster) -> None:       # any kind: in process, worker processes, ...
            cluster.deploy(bank, tasks=4)
            cluster.depot("bank", "deposits").append(Deposit(1, 100))
    """

    def deploy(self, module: Module, *, tasks: int | None = None, replication: int | None = None) -> None:
        """Run `module` with `tasks` tasks, each kept on `replication` workers (default 1); over
        existing data, reattach to it (same task count and replication)."""
        ...

    def update(self, module: Module) -> None:
        """Replace a deployed module's code with a new version of the same name, keeping its data."""
        ...

    def destroy(self, name: str) -> None:
        """Stop a module and delete all its data."""
        ...

    def modules(self) -> list[str]:
        """The names of the deployed modules, sorted."""
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

    def progress(self, module: str) -> dict[str, dict[str, list[int]]]:
        """{topology: {depot: [next offset to process, per partition]}}."""
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
