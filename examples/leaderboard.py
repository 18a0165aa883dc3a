"""A live leaderboard: players' scores add up to totals, and a top-N board that pages watch.

`scores` is partitioned by player, so each player's total is kept on the player's task; every
change of a total hops to task 0, where the board (`partitioned=False`) keeps the best `TOP_N`
totals in order. A stream topology acks once the whole tree ran, so when an append with
`ack=full` answers, the board already shows it. The page in `leaderboard_page/` (served at
`/examples/leaderboard/` by `headwater serve examples/app.py`) watches the board with the
JavaScript client and redraws it on each commit.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Annotated

import msgspec

import headwater as hw

TOP_N = 10  # entries on the board


@dataclass
class Score:
    player: str
    # Totals only grow, so a player who drops off the board never belongs back on it unseen: a
    # score of zero or less is refused as a SchemaError at append.
    points: Annotated[int, msgspec.Meta(gt=0)]


leaderboard = hw.Module("leaderboard")

scores = leaderboard.depot("scores", Score, partition_by="player")

totals = leaderboard.pstate("totals", hw.Map(str, int))
board = leaderboard.pstate("board", hw.List(hw.Record(player=str, points=int)), partitioned=False)


@leaderboard.stream(scores)
def add_score(ctx: hw.Context, score: Score) -> int:
    total = ctx.pstate(totals)[score.player]
    total.increment(score.points)
    points = total.get()
    ctx.hop_task(0, place, score.player, points)
    return points


@leaderboard.step
def place(ctx: hw.Context, player: str, points: int) -> None:
    """Put `player` at its place by points (ties: by name), keeping the best TOP_N."""
    entries = [entry for entry in ctx.pstate(board).get() or [] if entry["player"] != player]
    order = [(-entry["points"], entry["player"]) for entry in entries]
    at = bisect.bisect_left(order, (-points, player))
    if at < TOP_N:
        entries.insert(at, {"player": player, "points": points})
        ctx.pstate(board).set(entries[:TOP_N])


@leaderboard.query
def rank(ctx: hw.QueryContext, player: str) -> int | None:
    """The player's place on the board (1 is the leader), or None off the board."""
    for place_number, entry in enumerate(ctx.pstate(board).get() or [], start=1):
        if entry["player"] == player:
            return place_number
    return None
