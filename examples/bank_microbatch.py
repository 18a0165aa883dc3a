"""The bank as a microbatch topology: deposits and transfers applied exactly once, in atomic batches.

A transfer larger than the sender's balance is recorded as failed and moves no money. Within a
batch, the transfer is decided on the sender's task and the credit hops to the receiver's task;
the whole batch — debits, credits and records on every task — becomes visible at once. Batches
are exactly-once, so the credit needs no guard of its own; a transfer id appended twice (a client
retry without an idempotency key) is decided once, by its first record.
"""

from __future__ import annotations

import headwater as hw
from examples.bank import Deposit, Transfer  # the same events as the stream version, processed exactly once

__all__ = ["Deposit", "Transfer", "bank"]

bank = hw.Module("mbbank")

deposits = bank.depot("deposits", Deposit, partition_by="user_id")
transfers = bank.depot("transfers", Transfer, partition_by="from_id")

funds = bank.pstate("funds", hw.Map(int, int))
transfer_log = bank.pstate("transfer_log", hw.Map(int, hw.Map(str, hw.Record(to_id=int, amount=int, ok=bool), subindexed=True)))


@bank.microbatch(deposits, transfers)
def banking(ctx: hw.Context, event: Deposit | Transfer) -> None:
    match event:
        case Deposit(user_id=user, amount=amount):
            ctx.pstate(funds)[user].increment(amount)
        case Transfer(transfer_id=tid, from_id=sender, to_id=receiver, amount=amount):
            logged = ctx.pstate(transfer_log)[sender][tid]
            if logged.exists():  # the same transfer appended again: it moves money once
                return
            balance = ctx.pstate(funds)[sender]
            ok = balance.get(0) >= amount  # amounts are positive: the event type refuses others at append
            if ok:
                balance.increment(-amount)
                ctx.hop(receiver, credit, receiver, amount)
            logged.set({"to_id": receiver, "amount": amount, "ok": ok})


@bank.step
def credit(ctx: hw.Context, receiver: int, amount: int) -> None:
    ctx.pstate(funds)[receiver].increment(amount)


@bank.step
def local_total(ctx: hw.Context) -> int:
    return sum(v for _, v in ctx.pstate(funds).items())


@bank.query
def total_funds(ctx: hw.QueryContext) -> int:
    return sum(ctx.call_all(local_total))
