"""Waiting in tests for something that happens on another thread or process, with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float, poll_s: float = 0.02) -> Any:
    """The first truthy value of `predicate()`, polled every `poll_s`; fails naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)
    return value
