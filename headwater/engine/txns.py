"""Moving an invocation's writes down: into the Txn below it, or into a storage batch."""

from __future__ import annotations

from typing import Any

from headwater.storage import Batch

__all__ = ["add_txn_to_batch", "merge_txn"]


def merge_txn(source: Any, target: Any) -> None:
    """Apply an invocation's pending writes onto the Txn below it (range deletes first, as a Batch does)."""
    source.merge_into(target)


def add_txn_to_batch(txn: Any, batch: Batch) -> None:
    """Put a Txn's writes into a storage batch; a deleted subtree stays one range delete."""
    for start, stop in txn.deleted_ranges():
        batch.delete_range("pstate", start, stop)
    for key, value in txn.pending(expand_ranges=False):
        if value is None:
            batch.delete("pstate", key)
        else:
            batch.put("pstate", key, value)
