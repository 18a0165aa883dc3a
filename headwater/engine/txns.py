"""Moving a Txn's writes into a storage batch (into the Txn below it: `Txn.merge_into`)."""

from __future__ import annotations

from typing import Any

from headwater.storage import Batch

__all__ = ["add_txn_to_batch"]


def add_txn_to_batch(txn: Any, batch: Batch) -> None:
    """Put a Txn's writes into a storage batch; a deleted subtree stays one range delete."""
    for start, stop in txn.deleted_ranges():
        batch.delete_range("pstate", start, stop)
    for key, value in txn.pending(expand_ranges=False):
        if value is None:
            batch.delete("pstate", key)
        else:
            batch.put("pstate", key, value)
