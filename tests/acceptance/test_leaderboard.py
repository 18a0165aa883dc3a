"""The leaderboard example: totals per player, and the board of the best TOP_N in order, on every
cluster kind; the board is what a page watching it shows."""

from __future__ import annotations

import random

import pytest

import headwater as hw
from examples.leaderboard import TOP_N, Score, leaderboard
from tests.clusters import CLUSTER_KINDS, open_cluster


@pytest.fixture(params=CLUSTER_KINDS)
def kind_cluster(request, tmp_path):
    with open_cluster(request.param, tmp_path / "data") as cluster:
        yield cluster


def expected_board(totals: dict[str, int]) -> list[dict]:
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:TOP_N]
    return [{"player": player, "points": points} for player, points in ranked]


def test_the_board_keeps_the_best_totals_in_order(kind_cluster):
    kind_cluster.deploy(leaderboard, tasks=2)
    scores = kind_cluster.depot("leaderboard", "scores")
    board = kind_cluster.pstate("leaderboard", "board")
    rank = kind_cluster.query("leaderboard", "rank")
    rng = random.Random(15)
    totals: dict[str, int] = {}
    for _ in range(60):
        player, points = f"p{rng.randrange(25)}", rng.randrange(1, 50)
        totals[player] = totals.get(player, 0) + points
        assert scores.append(Score(player, points))["add_score"] == totals[player]  # ack=full: the hop ran too
        assert board.get() == expected_board(totals)
    assert len(board.get()) == TOP_N
    leader = expected_board(totals)[0]["player"]
    assert rank(leader) == 1
    assert rank(min(totals, key=totals.__getitem__)) is None  # off the board
    assert kind_cluster.pstate("leaderboard", "totals")[leader].get() == totals[leader]


def test_ties_go_by_name_and_a_score_must_be_positive():
    with hw.InProcessCluster() as cluster:
        cluster.deploy(leaderboard, tasks=2)
        scores = cluster.depot("leaderboard", "scores")
        scores.append_many([Score("bo", 5), Score("ann", 5), Score("cy", 7)])
        assert [e["player"] for e in cluster.pstate("leaderboard", "board").get()] == ["cy", "ann", "bo"]
        with pytest.raises(hw.SchemaError, match="points"):
            scores.append(Score("ann", 0))


def test_watching_the_board_rebuilds_it_from_diffs():
    with hw.InProcessCluster() as cluster:
        cluster.deploy(leaderboard, tasks=2)
        board = cluster.pstate("leaderboard", "board")
        with board.watch() as subscription:
            for points in (3, 9, 4, 12):
                cluster.depot("leaderboard", "scores").append(Score(f"p{points}", points))
                changes = iter(subscription)
                while subscription.value != board.get():
                    next(changes)
            assert [e["points"] for e in subscription.value] == [12, 9, 4, 3]
