"""Storage port and adapters (no knowledge of PStates, depots or the engine)."""

from headwater.storage.base import COLUMN_FAMILIES, Batch, Reader, Store
from headwater.storage.memory import MemoryStore
from headwater.storage.rocks import RocksStore

__all__ = ["COLUMN_FAMILIES", "Batch", "MemoryStore", "Reader", "RocksStore", "Store"]
