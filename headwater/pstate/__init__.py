"""Schema-driven layout of nested structures in a sorted key-value store, and the path API.

- `PStateLayout`: runs a path and an operation against one task's storage (the engine's entry point).
- `Txn`: a handler's pending writes over committed state; `pending()` goes into one write batch.
- `View`: item access (`view[k]["field"].set(v)`) and `select`/`transform` over an executor.
- Navigators for `select`/`transform`: `ALL`, `MAP_KEYS`, `MAP_VALS`, `FIRST`, `LAST`, `SIZE`,
  `nth`, `must`, `range`, `filter`, `view`; transform operations `set_val`, `apply`, `REMOVE`.
"""

from headwater.pstate.layout import PStateLayout
from headwater.pstate.navigators import (
    ALL,
    FIRST,
    LAST,
    MAP_KEYS,
    MAP_VALS,
    REMOVE,
    SIZE,
    Navigator,
    TransformOp,
    apply,
    filter,
    must,
    nth,
    range,
    set_val,
    view,
)
from headwater.pstate.paths import Target
from headwater.pstate.txn import Reader, Txn
from headwater.pstate.views import Executor, View
from headwater.schema import List, Map, Record, Set

__all__ = [
    "ALL",
    "FIRST",
    "LAST",
    "MAP_KEYS",
    "MAP_VALS",
    "REMOVE",
    "SIZE",
    "Executor",
    "List",
    "Map",
    "Navigator",
    "PStateLayout",
    "Reader",
    "Record",
    "Set",
    "Target",
    "TransformOp",
    "Txn",
    "View",
    "apply",
    "filter",
    "must",
    "nth",
    "range",
    "set_val",
    "view",
]
