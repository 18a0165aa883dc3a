"""A small social graph: who follows whom, kept on both sides, and who follows each other back."""

# --8<-- [start:events]
from dataclasses import dataclass

import headwater as hw


@dataclass
class Follow:
    follower: str
    followee: str


@dataclass
class Unfollow:
    follower: str
    followee: str


social = hw.Module("social")

follows = social.depot("follows", Follow, partition_by="follower")
unfollows = social.depot("unfollows", Unfollow, partition_by="follower")
# --8<-- [end:events]

# --8<-- [start:pstates]
following = social.pstate("following", hw.Map(str, hw.Set(str, subindexed=True)))
followers = social.pstate("followers", hw.Map(str, hw.Set(str, subindexed=True)))
# --8<-- [end:pstates]


# --8<-- [start:topology]
@social.stream(follows, unfollows)
def graph(ctx: hw.Context, event: Follow | Unfollow) -> bool:
    """Record the edge on the follower's task, then hop to the followee's task for the other side."""
    mine = ctx.pstate(following)[event.follower]
    match event:
        case Follow(follower, followee):
            if follower == followee or mine.contains(followee):
                return False  # nothing changed
            mine.add(followee)
            ctx.hop(followee, add_follower, followee, follower)
        case Unfollow(follower, followee):
            if not mine.contains(followee):
                return False
            mine.discard(followee)
            ctx.hop(followee, remove_follower, followee, follower)
    return True


@social.step
def add_follower(ctx: hw.Context, user: str, follower: str) -> None:
    ctx.pstate(followers)[user].add(follower)


@social.step
def remove_follower(ctx: hw.Context, user: str, follower: str) -> None:
    ctx.pstate(followers)[user].discard(follower)
# --8<-- [end:topology]


# --8<-- [start:query]
@social.query
def mutuals(ctx: hw.QueryContext, user: str) -> list[str]:
    """The users `user` follows who follow `user` back, sorted."""
    followed = set(ctx.pstate(following)[user].keys())
    return [name for name in ctx.pstate(followers)[user].keys() if name in followed]
# --8<-- [end:query]
