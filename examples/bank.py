"""The bank: deposits, transfers that hop to the receiver's task, and a total over all tasks.

Money is conserved across crashes. A transfer's debit and its record in `outgoing` commit together
on the sender's task, and its credit and its record in `incoming` commit together on the
receiver's task. A hop runs at least once (a crash that cuts a transfer short sends the credit
again), so the credit looks for its own record first and applies a transfer id once; the debit
does the same, so appending a transfer again — after a `HandlerError` or a timeout — moves no
money twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

import headwater as hw

# A non-positive amount would move money the wrong way: it is refused as a SchemaError when
# appended (in process and over HTTP), so no handler ever sees one.
Amount = Annotated[int, msgspec.Meta(gt=0)]


@dataclass
class Deposit:
    user_id: int
    amount: Amount


@dataclass
class Transfer:
    transfer_id: str
    from_id: int
    to_id: int
    amount: Amount


bank = hw.Module("bank")

deposits = bank.depot("deposits", Deposit, partition_by="user_id")
transfers = bank.depot("transfers", Transfer, partition_by="from_id")

funds = bank.pstate("funds", hw.Map(int, int))
outgoing = bank.pstate(
    "outgoing", hw.Map(int, hw.Map(str, hw.Record(to_id=int, amount=int, ok=bool), subindexed=True))
)
incoming = bank.pstate(
    "incoming", hw.Map(int, hw.Map(str, hw.Record(from_id=int, amount=int, ok=bool), subindexed=True))
)


@bank.stream(deposits)
def deposit(ctx: hw.Context, d: Deposit) -> int:
    ctx.pstate(funds)[d.user_id].increment(d.amount)
    return ctx.pstate(funds)[d.user_id].get()


@bank.stream(transfers)
def transfer(ctx: hw.Context, t: Transfer) -> bool:
    sent = ctx.pstate(outgoing)[t.from_id][t.transfer_id]
    if sent.exists():  # this transfer id was decided before: answer as then, move nothing
        return sent["ok"].get()
    balance = ctx.pstate(funds)[t.from_id]
    ok = balance.get(0) >= t.amount
    if ok:
        balance.increment(-t.amount)
    sent.set({"to_id": t.to_id, "amount": t.amount, "ok": ok})
    ctx.hop(t.to_id, credit, t, ok)  # continue on the task that owns t.to_id
    return ok  # returned to a full-ack appender


@bank.step
def credit(ctx: hw.Context, t: Transfer, ok: bool) -> None:
    received = ctx.pstate(incoming)[t.to_id][t.transfer_id]
    if received.exists():  # a replayed hop: this transfer was credited already
        return
    if ok:
        ctx.pstate(funds)[t.to_id].increment(t.amount)
    received.set({"from_id": t.from_id, "amount": t.amount, "ok": ok})


@bank.query
def total_funds(ctx: hw.QueryContext) -> int:
    return sum(ctx.call_all(local_total))


@bank.step
def local_total(ctx: hw.Context) -> int:
    return sum(v for _, v in ctx.pstate(funds).items())
