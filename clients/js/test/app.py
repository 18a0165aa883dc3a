"""The module the JavaScript client's tests run against: `headwater serve` this file.

A game room holds scores, tags, a chat and a title, written by one stream topology from `ops`
events, twice: once with its collections subindexed (stored element by element) and once inline,
so the tests watch both layouts. `counts` has integer keys (under the room); a `boom` event makes the topology
raise, for the handler error.
"""

from dataclasses import dataclass

import headwater as hw


@dataclass
class Op:
    room: str
    kind: str  # "score", "unscore", "tag", "untag", "say", "trim", "title", "reset", "count", "boom"
    who: str = ""
    amount: int = 0


def _room(subindexed: bool) -> hw.Record:
    return hw.Record(scores=hw.Map(str, int, subindexed=subindexed), tags=hw.Set(str, subindexed=subindexed),
                     chat=hw.List(str, subindexed=subindexed), title=str)


game = hw.Module("game")
ops = game.depot("ops", Op, partition_by="room")
rooms = game.pstate("rooms", hw.Map(str, _room(True)))
flat_rooms = game.pstate("flat_rooms", hw.Map(str, _room(False)))
counts = game.pstate("counts", hw.Map(str, hw.Map(int, int)))  # room, then an integer key


@game.stream(ops)
def apply_op(ctx: hw.Context, op: Op) -> int:
    if op.kind == "boom":
        raise ValueError(f"boom in room {op.room}")
    if op.kind == "count":
        ctx.pstate(counts)[op.room][op.amount].update(lambda v: (v or 0) + 1)
        return op.amount
    for pstate in (rooms, flat_rooms):
        room = ctx.pstate(pstate)[op.room]
        if op.kind == "score":
            room["scores"][op.who].update(lambda v: (v or 0) + op.amount)
        elif op.kind == "unscore":
            room["scores"][op.who].delete()
        elif op.kind == "tag":
            room["tags"].add(op.who)
        elif op.kind == "untag":
            room["tags"].discard(op.who)
        elif op.kind == "say":
            room["chat"].append(f"{op.who}:{op.amount}")
        elif op.kind == "trim" and room["chat"].size():
            room["chat"][-1].delete()
        elif op.kind == "title":
            room["title"].set(op.who)
        elif op.kind == "reset":
            room.delete()
    return ctx.pstate(rooms)[op.room]["scores"].size()


@game.query
def room_total(ctx: hw.QueryContext, room: str) -> int:
    return sum(ctx.pstate(rooms)[room]["scores"].values())
