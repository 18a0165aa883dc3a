"""Top-spending users: a per-user total on each user's task, and one global top-N list.

The per-user totals are partitioned by user; the leaderboard is `partitioned=False` (it lives
on task 0), fed by hops from every task. Microbatching makes both change together, exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

import headwater as hw

TOP_N = 5


@dataclass
class Purchase:
    user_id: str
    # The leaderboard keeps only the top N, which stays right only while totals only grow: a
    # refund would let a user sink below someone the board already dropped. So a purchase of
    # zero or fewer cents is refused as a SchemaError at append.
    cents: Annotated[int, msgspec.Meta(gt=0)]


spenders = hw.Module("spenders")

purchases = spenders.depot("purchases", Purchase, partition_by="user_id")

totals = spenders.pstate("totals", hw.Map(str, int))
leaderboard = spenders.pstate("leaderboard", hw.List(hw.Record(user_id=str, cents=int)), partitioned=False)


@spenders.microbatch(purchases)
def spend(ctx: hw.Context, purchase: Purchase) -> None:
    total = ctx.pstate(totals)[purchase.user_id]
    total.increment(purchase.cents)
    ctx.hop_task(0, rank, purchase.user_id, total.get())


@spenders.step
def rank(ctx: hw.Context, user_id: str, cents: int) -> None:
    board = ctx.pstate(leaderboard)
    entries = [e for e in board.get() or [] if e["user_id"] != user_id]
    entries.append({"user_id": user_id, "cents": cents})
    entries.sort(key=lambda e: (-e["cents"], e["user_id"]))
    board.set(entries[:TOP_N])
