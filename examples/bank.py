"""The bank of DESIGN §2: deposits, transfers that hop to the receiver's task, and a total over all tasks."""

from __future__ import annotations

from dataclasses import dataclass

import headwater as hw


@dataclass
class Deposit:
    user_id: int
    amount: int


@dataclass
class Transfer:
    transfer_id: str
    from_id: int
    to_id: int
    amount: int


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
    balance = ctx.pstate(funds)[t.from_id]
    ok = balance.get(0) >= t.amount
    if ok:
        balance.increment(-t.amount)
    ctx.pstate(outgoing)[t.from_id][t.transfer_id].set({"to_id": t.to_id, "amount": t.amount, "ok": ok})
    ctx.hop(t.to_id, credit, t, ok)  # continue on the task that owns t.to_id
    return ok  # returned to a full-ack appender


@bank.step
def credit(ctx: hw.Context, t: Transfer, ok: bool) -> None:
    if ok:
        ctx.pstate(funds)[t.to_id].increment(t.amount)
    ctx.pstate(incoming)[t.to_id][t.transfer_id].set({"from_id": t.from_id, "amount": t.amount, "ok": ok})


@bank.query
def total_funds(ctx: hw.QueryContext) -> int:
    return sum(ctx.call_all(local_total))


@bank.step
def local_total(ctx: hw.Context) -> int:
    return sum(v for _, v in ctx.pstate(funds).items())
