"""Per-task resources: the objects (clients, pools) a module declares with `module.resource`.

Each task holds its own, built by the declaration's factory in the process that hosts the task
and closed when the task stops. The engine keeps the objects and builds or closes them when its
host says so; the host decides when (before the first round, after a restart) and bounds how long
a close may take, since that needs a thread and a clock the engine does not own.

The objects never cross the transport and are never pickled: a module travels to worker
processes with its factories, and every process builds what its tasks need.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from headwater.engine.definitions import ResourceDecl
from headwater.errors import NotFound, ResourceError

__all__ = ["TaskResources"]

_log = logging.getLogger("headwater.resources")


class TaskResources:
    """The resources of one task: built once (`open`), handed out (`get`), closed once (`close`).

    `open` may be called again after it raised: it builds only what is still missing. The
    state is read from other threads (reads and queries use resources too) but only changed by
    the host's calls, one at a time.
    """

    def __init__(self, module: str, decls: dict[str, ResourceDecl], task_id: int) -> None:
        self._module = module
        self._decls = decls
        self._task_id = task_id
        self._built: dict[str, Any] = {}
        self.error: str | None = None  # why the last `open` failed, for status()
        self.attempts = 0  # `open` calls that failed in a row
        self.closed = False

    @property
    def ready(self) -> bool:
        """Every declared resource is built (a module without resources is always ready)."""
        return len(self._built) == len(self._decls) and not self.closed

    def open(self) -> None:
        """Build the resources not built yet, in declaration order; `ResourceError` names the first
        whose factory raised (those built stay built: the next `open` goes on from there)."""
        for name, decl in self._decls.items():
            if name in self._built:
                continue
            try:
                self._built[name] = decl.factory(self._task_id)
            except Exception as e:
                self.attempts += 1
                self.error = (f"resource {name!r} of task {self._task_id} of module {self._module!r} could not be "
                              f"built: its factory raised {type(e).__name__}: {e}")
                _log.warning("%s (attempt %d)\n%s", self.error, self.attempts, traceback.format_exc())
                raise ResourceError(self.error, resource=name, task=self._task_id) from e
        self.error, self.attempts = None, 0

    def get(self, name: str) -> Any:
        """The task's object for resource `name`."""
        try:
            return self._built[name]
        except KeyError:
            pass
        if name not in self._decls:
            raise NotFound("resource", str(name), self._decls,
                           where=f"module {self._module!r} (declare it with module.resource(name, factory))")
        if self.closed:
            raise ResourceError(f"resource {name!r} of task {self._task_id} of module {self._module!r} is closed: "
                                "the task stopped", resource=name, task=self._task_id)
        raise ResourceError(
            f"resource {name!r} of task {self._task_id} of module {self._module!r} is not built"
            f"{': ' + self.error if self.error else ' yet'}; the task retries building it and runs no handler "
            "until it has", resource=name, task=self._task_id)

    def close(self) -> None:
        """Close every built resource once, the last built first; a close that raises is logged and
        the others still close. Runs on a thread of the host's, which bounds how long it waits."""
        self.closed = True
        built, self._built = self._built, {}
        for name, obj in reversed(built.items()):
            close: Callable[[Any], Any] | None = self._decls[name].close
            if close is None:
                continue
            try:
                close(obj)
            except Exception:
                _log.exception("closing resource %r of task %d of module %r raised", name, self._task_id,
                               self._module)

    def describe(self) -> dict[str, Any]:
        """For status(): whether the task has its resources, and the last build error."""
        return {"ready": self.ready, "error": self.error, "attempts": self.attempts}
