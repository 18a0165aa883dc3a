"""Helpers for tests that run the engine in a child process and kill it."""

from __future__ import annotations

import queue
import threading
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
