"""Watching a depot partition's end offset (`DepotClient.watch_end`): the hub wakes on the
partition's records as it wakes on PState paths, on every cluster kind."""

from __future__ import annotations

import pytest

import headwater as hw
from headwater.pstate.diffs import Put
from tests.clusters import CLUSTER_KINDS, open_cluster
from tests.engine.test_watch import Op, game


@pytest.fixture(params=CLUSTER_KINDS)
def kind_cluster(request, tmp_path):
    with open_cluster(request.param, tmp_path / "data") as cluster:
        yield cluster


def test_the_end_offset_of_a_partition_moves_with_each_append(kind_cluster):
    kind_cluster.deploy(game(False), tasks=2)
    ops = kind_cluster.depot("game", "ops")
    first = ops.append(Op("r1", "score", "ann", 1))
    partition = first.partition
    other = 1 - partition
    with ops.watch_end(partition) as end, ops.watch_end(other) as quiet:
        assert end.value == first.offset + 1 and quiet.value == ops.partition_info(other).end_offset
        for expected in range(first.offset + 2, first.offset + 5):
            ops.append(Op("r1", "say", "bo", expected))
            assert next(iter(end)) == Put((), expected)
            assert end.value == expected == ops.partition_info(partition).end_offset
        # Many appends in one call: at most one diff per commit, the last one the end.
        ops.append_many([Op("r1", "tag", str(i)) for i in range(50)])
        while end.value != ops.partition_info(partition).end_offset:
            change = next(iter(end))
            assert isinstance(change, Put) and change.value <= ops.partition_info(partition).end_offset
        assert quiet.value == ops.partition_info(other).end_offset  # nothing was appended there


def test_a_bad_partition_is_refused():
    with hw.InProcessCluster() as cluster:
        cluster.deploy(game(False), tasks=2)
        with pytest.raises(ValueError, match=r"partitions 0\.\.1, not 2"):
            cluster.depot("game", "ops").watch_end(2)
