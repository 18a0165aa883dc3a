"""A child process that cuts a bank transfer short: it dies after the credit hop committed on the
receiver's task, before the sender's task recorded the transfer's tree as complete.

That is the moment a crash makes a hop run twice: on restart the sender sends the credit again.

    python -m tests.acceptance.crashing_bank DATA_DIR SENDER RECEIVER
"""

from __future__ import annotations

import os
import sys

import headwater as hw
from examples.bank import Deposit, Transfer, bank
from headwater.engine.trees import Trees

OPENING_BALANCE = 100
AMOUNT = 60


def die_when_a_transfer_tree_completes() -> None:
    original = Trees._complete

    def complete_or_die(self: Trees, seq: int, state) -> None:  # type: ignore[no-untyped-def]
        if state.topology == "transfer" and state.pending_key is not None:
            os._exit(0)  # the credit committed on the receiver; the sender's pending entry is still there
        original(self, seq, state)

    Trees._complete = complete_or_die  # type: ignore[method-assign]


def main(path: str, sender: int, receiver: int) -> None:
    cluster = hw.InProcessCluster(path)
    cluster.deploy(bank, tasks=2)
    for user in (sender, receiver):
        cluster.depot("bank", "deposits").append(Deposit(user, OPENING_BALANCE))
    die_when_a_transfer_tree_completes()
    print("DEPOSITED", flush=True)
    cluster.depot("bank", "transfers").append(Transfer("t1", sender, receiver, AMOUNT))
    print("NOT KILLED", flush=True)  # the test fails if the transfer's tree completed without dying


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
