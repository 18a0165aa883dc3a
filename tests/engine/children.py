"""Helpers for tests that run the engine in a child process and kill it."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any


def lines_within(stream: Any, silence_max_s: float) -> Iterator[str]:
    """Lines of `stream`, ending early if none arrives for `silence_max_s` (a stuck child fails, never hangs)."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream] + [lines.put(None)], daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=silence_max_s)
        except queue.Empty:
            return
        if line is None:
            return
        yield line


def wait_until_settled(cluster: Any, module: str, *, timeout_s: float = 60.0) -> None:
    """Wait until every topology of `module` processed every record and no stream tree is unfinished.

    After a restart, trees a crash cut short are finished in the background (their hops sent
    again); a test that checks PStates before that would miss a hop applied twice. A tree's root
    keeps a `pending/` entry in its task's metadata until the tree completes, so "settled" is:
    progress at every depot's end (microbatch topologies included) and no such entry on any
    task (a read any cluster kind answers).
    """
    deployment = cluster.deployment(module)
    deadline = time.monotonic() + timeout_s
    while True:
        behind = {
            (topology, depot): offsets
            for topology, by_depot in cluster.progress(module).items()
            for depot, offsets in by_depot.items()
            if offsets != [cluster.depot(module, depot).partition_info(p).end_offset for p in range(len(offsets))]
        }
        pending = sum(deployment.transport.read(task, ("unfinished",)) for task in range(deployment.runtime.tasks))
        if not behind and not pending:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{module}: topologies did not settle within {timeout_s}s "
                                 f"(behind: {behind}, unfinished trees: {pending})")
        time.sleep(0.01)
