"""The examples keep their own invariants under the documented guarantees.

Hops run at least once, so a crash can run the bank's credit twice; a client may append the same
transfer twice; a caller may send a negative amount or a timestamp no date can hold. None of it
may create money, move it the wrong way, or surface as a handler error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import headwater as hw
from examples.bank import Deposit, Transfer, bank
from examples.bank_microbatch import bank as microbatch_bank
from examples.registration import TIMESTAMP_MS_MAX, UserSignUp, registration
from examples.top_spenders import Purchase, spenders
from headwater.schema.keys import task_for_key
from tests.acceptance.crashing_bank import AMOUNT, OPENING_BALANCE
from tests.engine.children import wait_until_settled
from tests.server.support import served

ROOT = Path(__file__).resolve().parents[2]
CHILD_RUN_MAX_S = 60


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[hw.InProcessCluster, str]]:
    with hw.InProcessCluster() as cluster:
        for module in (bank, microbatch_bank, registration, spenders):
            cluster.deploy(module, tasks=2)
        with served(cluster) as url:
            yield cluster, url


@pytest.fixture(params=["in_process", "remote"])
def client(request: pytest.FixtureRequest, backend: Any) -> Iterator[Any]:
    cluster, url = backend
    if request.param == "in_process":
        yield cluster
        return
    with hw.connect(url, modules=[bank, microbatch_bank, registration, spenders]) as remote:
        yield remote


def depot_sizes(cluster: hw.InProcessCluster, module: str, depot: str) -> list[int]:
    handle = cluster.depot(module, depot)
    return [handle.partition_info(p).end_offset for p in range(handle.partitions)]


# ---- bad input is a SchemaError at append, and nothing is appended ----------------------------
@pytest.mark.parametrize("module", ["bank", "mbbank"])
@pytest.mark.parametrize("amount", [0, -100])
def test_a_non_positive_amount_is_refused_and_nothing_is_appended(client, backend, module, amount):
    cluster = backend[0]
    before = {name: depot_sizes(cluster, module, name) for name in ("deposits", "transfers")}
    with pytest.raises(hw.SchemaError, match=r"Expected `int` >= 1.*\$\.amount"):
        client.depot(module, "deposits").append(Deposit(1, amount))
    with pytest.raises(hw.SchemaError, match=r"Expected `int` >= 1.*\$\.amount"):
        client.depot(module, "transfers").append(Transfer("neg", 1, 2, amount))
    assert {name: depot_sizes(cluster, module, name) for name in ("deposits", "transfers")} == before
    assert cluster.dead_letters("bank", "transfer") == []


def test_a_refund_is_refused_so_the_leaderboard_stays_right(client, backend):
    before = depot_sizes(backend[0], "spenders", "purchases")
    with pytest.raises(hw.SchemaError, match=r"Expected `int` >= 1.*\$\.cents"):
        client.depot("spenders", "purchases").append(Purchase("ann", -500), ack="append")
    assert depot_sizes(backend[0], "spenders", "purchases") == before


@pytest.mark.parametrize("timestamp_ms", [-1, TIMESTAMP_MS_MAX + 1, 2**63 - 1, 2**64])
def test_a_timestamp_no_date_can_hold_is_refused_and_nothing_is_appended(client, backend, timestamp_ms):
    cluster = backend[0]
    before = depot_sizes(cluster, "registration", "registrations")
    with pytest.raises(hw.SchemaError, match="timestamp_ms|2\\*\\*64"):
        client.depot("registration", "registrations").append(UserSignUp("far@example.com", "h", timestamp_ms))
    assert depot_sizes(cluster, "registration", "registrations") == before
    assert cluster.dead_letters("registration", "register") == []


def test_the_first_and_last_millisecond_a_date_can_hold_are_registered(client):
    signups, who = client.depot("registration", "registrations"), uuid.uuid4().hex  # the backend is shared
    assert signups.append(UserSignUp(f"first-{who}@example.com", "h", 0))["register"] is False
    assert signups.append(UserSignUp(f"last-{who}@example.com", "h", TIMESTAMP_MS_MAX))["register"] is False
    assert client.query("registration", "signups_on")("9999-12-31") >= 1
    assert client.query("registration", "signups_on")("1970-01-01") >= 1


# ---- a transfer id moves money once -----------------------------------------------------------
def test_a_transfer_appended_again_moves_money_once(cluster):
    cluster.deploy(bank, tasks=2)
    cluster.depot("bank", "deposits").append(Deposit(1, 100))
    transfers = cluster.depot("bank", "transfers")
    assert transfers.append(Transfer("t1", 1, 2, 60))["transfer"] is True
    assert transfers.append(Transfer("t1", 1, 2, 60))["transfer"] is True  # answered as the first time
    assert transfers.append(Transfer("t2", 1, 2, 60))["transfer"] is False  # only 40 left
    assert transfers.append(Transfer("t2", 1, 2, 60))["transfer"] is False
    funds = cluster.pstate("bank", "funds")
    assert (funds[1].get(), funds[2].get()) == (40, 60)
    assert cluster.query("bank", "total_funds")() == 100


def test_a_transfer_appended_again_moves_money_once_in_the_microbatch_bank(cluster):
    cluster.deploy(microbatch_bank, tasks=2)
    cluster.depot("mbbank", "deposits").append(Deposit(1, 100), ack="append")
    cluster.wait_for_microbatch("mbbank", "banking", processed=1)
    same_batch = [Transfer("t1", 1, 2, 30), Transfer("t1", 1, 2, 30)]
    cluster.pause("mbbank", "banking")  # both copies of t1 land in one batch
    cluster.depot("mbbank", "transfers").append_many(same_batch, ack="append")
    cluster.resume("mbbank", "banking")
    cluster.wait_for_microbatch("mbbank", "banking", processed=3)
    cluster.depot("mbbank", "transfers").append(Transfer("t1", 1, 2, 30), ack="append")  # and a later batch
    cluster.wait_for_microbatch("mbbank", "banking", processed=4)
    funds = cluster.pstate("mbbank", "funds")
    assert (funds[1].get(), funds[2].get()) == (70, 30)
    assert cluster.query("mbbank", "total_funds")() == 100


def two_users_on_different_tasks(tasks: int) -> tuple[int, int]:
    sender = 1
    receiver = next(u for u in range(2, 100) if task_for_key(u, tasks) != task_for_key(sender, tasks))
    return sender, receiver


def test_a_credit_replayed_after_a_crash_moves_money_once(tmp_path):
    """The child dies after the credit committed and before the transfer's tree was recorded complete,
    so the restart sends the credit hop again: it must find the transfer already credited."""
    sender, receiver = two_users_on_different_tasks(2)
    child = subprocess.run(
        [sys.executable, "-m", "tests.acceptance.crashing_bank", str(tmp_path), str(sender), str(receiver)],
        cwd=ROOT, capture_output=True, text=True, timeout=CHILD_RUN_MAX_S, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout.split() == ["DEPOSITED"], child.stdout + child.stderr[-3000:]
    with hw.InProcessCluster(tmp_path) as cluster:
        cluster.deploy(bank)
        wait_until_settled(cluster, "bank")
        funds = cluster.pstate("bank", "funds")
        assert funds[sender].get() == OPENING_BALANCE - AMOUNT
        assert funds[receiver].get() == OPENING_BALANCE + AMOUNT, "the replayed credit was applied twice"
        assert cluster.pstate("bank", "incoming")[receiver]["t1"].get() == {"from_id": sender, "amount": AMOUNT, "ok": True}
        assert cluster.query("bank", "total_funds")() == 2 * OPENING_BALANCE
