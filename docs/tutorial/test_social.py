"""Tests of the tutorial's module: run them with `pytest` next to social.py."""

import pytest

import headwater as hw
from social import Follow, Unfollow, social


@pytest.fixture
def cluster():
    with hw.InProcessCluster() as cluster:  # a temporary directory, removed on close
        cluster.deploy(social, tasks=4)
        yield cluster


def test_a_follow_is_kept_on_both_sides(cluster):
    result = cluster.depot("social", "follows").append(Follow("ada", "grace"))
    assert result["graph"] is True  # what the topology returned, after the hop ran too
    assert cluster.pstate("social", "following")["ada"].keys() == ["grace"]
    assert cluster.pstate("social", "followers")["grace"].keys() == ["ada"]


def test_following_twice_changes_nothing(cluster):
    follows = cluster.depot("social", "follows")
    assert follows.append(Follow("ada", "grace"))["graph"] is True
    assert follows.append(Follow("ada", "grace"))["graph"] is False
    assert cluster.pstate("social", "followers")["grace"].size() == 1


def test_an_unfollow_removes_both_sides(cluster):
    cluster.depot("social", "follows").append(Follow("ada", "grace"))
    assert cluster.depot("social", "unfollows").append(Unfollow("ada", "grace"))["graph"] is True
    assert cluster.pstate("social", "following")["ada"].keys() == []
    assert cluster.pstate("social", "followers")["grace"].keys() == []


def test_mutuals_are_the_users_who_follow_back(cluster):
    follows = cluster.depot("social", "follows")
    for follower, followee in [("ada", "grace"), ("grace", "ada"), ("ada", "linus"), ("alan", "ada")]:
        follows.append(Follow(follower, followee))
    mutuals = cluster.query("social", "mutuals")
    assert mutuals("ada") == ["grace"]
    assert mutuals("linus") == []


def test_a_malformed_event_is_refused_and_nothing_is_appended(cluster):
    follows = cluster.depot("social", "follows")
    with pytest.raises(hw.SchemaError, match="followee"):
        follows.append({"follower": "ada"})
    assert sum(follows.partition_info(p).end_offset for p in range(follows.partitions)) == 0
