"""headwater: build backends log-first.

Durable partitioned event logs (depots), the Python code that reacts to every append (stream
topologies), the indexed state it maintains (PStates), and reads over it — one system that runs
inside a unit test exactly as it runs on a cluster.
"""

from headwater import sources
from headwater.client.api import AppendResult, DeadLetter, DepotRecord, PartitionInfo
from headwater.client.cluster import BackupInfo, Cluster, ModuleInfo
from headwater.client.remote import RemoteCluster, connect
from headwater.client.subscriptions import Subscription
from headwater.cluster.backups import prune_backups, restore
from headwater.cluster.inprocess import InProcessCluster
from headwater.cluster.local import LocalCluster
from headwater.cluster.ray import RayCluster
from headwater.engine.context import Context
from headwater.engine.definitions import Ack, Module, Retention, Retry
from headwater.engine.query import QueryContext
from headwater.engine.sources import Source, SourceReader
from headwater.engine.ticks import Tick
from headwater.errors import (
    AckTimeout,
    BackupError,
    DefinitionError,
    HandlerError,
    HeadwaterError,
    HopDepthExceeded,
    IdempotencyConflict,
    NotFound,
    PathError,
    PermissionDenied,
    QueryDepthExceeded,
    QueryTimeout,
    ReadOnlyError,
    ResourceError,
    SchemaError,
    StorageError,
    Unavailable,
    WrongPartitionError,
)
from headwater.pstate import (
    ALL,
    FIRST,
    LAST,
    MAP_KEYS,
    MAP_VALS,
    REMOVE,
    SIZE,
    apply,
    diffs,
    filter,
    must,
    nth,
    range,
    set_val,
    view,
)
from headwater.schema import List, Map, Record, Set
from headwater.schema.types import migrated

__all__ = [
    "ALL",
    "Ack",
    "AckTimeout",
    "AppendResult",
    "BackupError",
    "BackupInfo",
    "Cluster",
    "Context",
    "DeadLetter",
    "DefinitionError",
    "DepotRecord",
    "FIRST",
    "HandlerError",
    "HeadwaterError",
    "HopDepthExceeded",
    "IdempotencyConflict",
    "InProcessCluster",
    "LAST",
    "List",
    "LocalCluster",
    "MAP_KEYS",
    "MAP_VALS",
    "Map",
    "Module",
    "ModuleInfo",
    "NotFound",
    "PartitionInfo",
    "PathError",
    "PermissionDenied",
    "QueryContext",
    "QueryDepthExceeded",
    "QueryTimeout",
    "REMOVE",
    "RayCluster",
    "ReadOnlyError",
    "Record",
    "RemoteCluster",
    "ResourceError",
    "Retention",
    "Retry",
    "SIZE",
    "SchemaError",
    "Set",
    "Source",
    "SourceReader",
    "StorageError",
    "Subscription",
    "Tick",
    "Unavailable",
    "WrongPartitionError",
    "apply",
    "connect",
    "diffs",
    "filter",
    "migrated",
    "must",
    "nth",
    "prune_backups",
    "range",
    "restore",
    "set_val",
    "sources",
    "view",
]
