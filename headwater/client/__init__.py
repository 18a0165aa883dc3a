"""The client API: depots, PState views, queries and dead letters of a deployed module."""

from headwater.client.api import AppendResult, DeadLetter, DepotClient, DepotRecord, PartitionInfo

__all__ = ["AppendResult", "DeadLetter", "DepotClient", "PartitionInfo", "DepotRecord"]
