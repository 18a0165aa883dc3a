"""Tasks, depots, stream topologies, hops, acks and recovery."""

from headwater.engine.context import Context
from headwater.engine.definitions import Ack, DepotDecl, Module, PStateDecl, Retry

__all__ = ["Ack", "Context", "DepotDecl", "Module", "PStateDecl", "Retry"]
