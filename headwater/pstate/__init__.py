"""Schema-driven layout of nested structures in a sorted key-value store, and the path API.

- `PStateLayout`: runs a path and an operation against one task's storage (the engine's entry point).
- `Txn`: a handler's pending writes over committed state; `pending()` goes into one write batch.
- `View`: item access (`view[k]["field"].set(v)`) over an executor the engine provides.
"""

from headwater.pstate.layout import PStateLayout, Target
from headwater.pstate.txn import Reader, Txn
from headwater.pstate.view import Executor, View
from headwater.schema import List, Map, Record, Set

__all__ = ["Executor", "List", "Map", "PStateLayout", "Reader", "Record", "Set", "Target", "Txn", "View"]
