"""The client API: depots, PState views, queries and dead letters of a deployed module."""

from headwater.client.api import AppendResult, DeadLetter, DepotClient, PartitionInfo, DepotRecord

__all__ = ["AppendResult", "DeadLetter", "DepotClient", "PartitionInfo", "DepotRecord"]
