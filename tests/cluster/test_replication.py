"""Replicated tasks on workers (LocalCluster, RayCluster): every batch the leader writes is on its
followers before anyone hears of it; a follower that dies catches up when it is back, and acks never
stall on it; a lost leader's follower takes over."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import headwater as hw
from headwater.cluster.local import WORKER_SILENT_S
from headwater.cluster.replication import REPLICA_ACK_WAIT_S, read_position, task_directory
from headwater.schema.keys import task_for_key
from headwater.storage import RocksStore
from examples.bank import Deposit, Transfer, bank
from tests.cluster.test_local_cluster import append_retrying, worker_pid
from tests.clusters import open_cluster


@pytest.fixture(params=["local", "ray"])
def kind(request) -> str:
    """Replication runs on every cluster kind with workers: LocalCluster, and RayCluster."""
    return request.param


CATCH_UP_S_MAX = 30  # the longest a follower may take to be in sync again


def followers(cluster: hw.LocalCluster, module: str) -> list[list[dict]]:
    return [row["followers"] for row in cluster.status()[module]]


def wait_in_sync(cluster: hw.LocalCluster, module: str) -> list[list[dict]]:
    deadline = time.monotonic() + CATCH_UP_S_MAX
    while True:
        found = followers(cluster, module)
        if all(f["in_sync"] and f["lag"] == 0 for row in found for f in row):
            return found
        assert time.monotonic() < deadline, f"the followers did not catch up: {found}"
        time.sleep(0.05)


def test_every_acked_append_is_on_both_copies(tmp_path, kind):
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(bank, tasks=2, replication=2)
        found = wait_in_sync(cluster, "bank")
        assert [[f["worker"] for f in row] for row in found] == [[1], [0]]
        deposits = cluster.depot("bank", "deposits")
        for i in range(50):
            deposits.append(Deposit(i % 4, 10))
        assert sum(cluster.pstate("bank", "funds")[user].get() for user in range(4)) == 500
        wait_in_sync(cluster, "bank")
    # Both copies of each task hold the same batches, so the same position and the same state.
    for task in range(2):
        stores = [RocksStore(task_directory(tmp_path / "bank", task, worker, 2)) for worker in (0, 1)]
        positions = [read_position(store) for store in stores]
        contents = [list(store.iterate("pstate", b"")) + list(store.iterate("depot", b"")) for store in stores]
        for store in stores:
            store.close()
        assert positions[0] == positions[1] and positions[0][1] > 0
        assert contents[0] == contents[1]


def test_replication_is_checked_at_deploy(tmp_path, kind):
    with open_cluster(kind, tmp_path) as cluster:
        with pytest.raises(hw.DefinitionError, match="replication=3 must be an int from 1 to 2"):
            cluster.deploy(bank, tasks=2, replication=3)
        cluster.deploy(bank, tasks=2, replication=2)
    with open_cluster(kind, tmp_path) as cluster:
        with pytest.raises(hw.DefinitionError, match="replication is 2, not 1"):
            cluster.deploy(bank, tasks=2, replication=1)
        cluster.deploy(bank, tasks=2)  # reattaches with the stored replication
        assert all(len(row) == 1 for row in followers(cluster, "bank"))
    with hw.InProcessCluster(tmp_path / "other") as cluster:
        with pytest.raises(hw.DefinitionError, match="LocalCluster or a RayCluster"):
            cluster.deploy(bank, tasks=2, replication=2)


def test_a_dead_follower_does_not_stall_acks_and_catches_up_when_back(tmp_path, kind):
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(bank, tasks=2, replication=2)
        wait_in_sync(cluster, "bank")
        deposits = cluster.depot("bank", "deposits")
        deadline = time.monotonic() + CATCH_UP_S_MAX
        keys = iter(range(1_000_000))
        on_task = {task_for_key(user, 2): user for user in range(100)}  # a user whose deposits go to each task
        for _ in range(20):
            append_retrying(deposits, Deposit(on_task[0], 1), f"d{next(keys)}", deadline)
        os.kill(worker_pid(cluster, 1), signal.SIGKILL)  # the follower of task 0 (and the leader of task 1)
        started = time.monotonic()
        for _ in range(20):  # task 0's leader lives: its acks wait for the dead follower only so long
            deposits.append(Deposit(on_task[0], 1), idempotency_key=f"d{next(keys)}", timeout=10)
        assert time.monotonic() - started < 10 * REPLICA_ACK_WAIT_S
        found = wait_in_sync(cluster, "bank")
        assert found[0][0]["worker"] == 1
        for _ in range(20):
            append_retrying(deposits, Deposit(on_task[1], 1), f"d{next(keys)}", deadline)
        total = sum(cluster.pstate("bank", "funds")[user].get() or 0 for user in on_task.values())
        assert total == 60
        wait_in_sync(cluster, "bank")
    for task in range(2):
        stores = [RocksStore(task_directory(tmp_path / "bank", task, worker, 2)) for worker in (0, 1)]
        contents = [list(store.iterate("pstate", b"")) for store in stores]
        positions = [read_position(store)[1] for store in stores]
        for store in stores:
            store.close()
        assert positions[0] == positions[1]
        assert contents[0] == contents[1]


def test_a_lost_leader_fails_over_and_nothing_acked_is_lost(tmp_path, kind):
    """Kill the worker leading tasks under deposits and transfers (hops between tasks): a follower
    takes over within seconds, the dead worker comes back as a follower, catches up and can take
    over in turn; every acked transfer is applied once, money is conserved, funds as an oracle says."""
    users = 8
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(bank, tasks=2, replication=2)
        wait_in_sync(cluster, "bank")
        deadline = time.monotonic() + 120
        deposits, transfers = cluster.depot("bank", "deposits"), cluster.depot("bank", "transfers")
        for user in range(users):
            append_retrying(deposits, Deposit(user, 1000), f"d{user}", deadline)
        acked: dict[int, bool] = {}
        errors: list[BaseException] = []
        stop = threading.Event()

        def appender(thread: int) -> None:
            for i in range(1_000_000):
                if stop.is_set():
                    return
                number = thread * 1_000_000 + i
                t = Transfer(f"t{number}", number % users, (number * 3 + 1) % users, 1 + number % 5)
                try:
                    acked[number] = append_retrying(transfers, t, t.transfer_id, deadline)["transfer"]
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=appender, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        failovers = []
        for victim in (0, 1):  # the leader of task 0, then (once back and in sync) the other worker
            while len(acked) < 100 * (victim + 1) and not errors:
                time.sleep(0.01)
            wait_in_sync(cluster, "bank")
            leaders_before = [row["worker"] for row in cluster.status()["bank"]]
            os.kill(worker_pid(cluster, victim), signal.SIGKILL)
            killed_at, count = time.monotonic(), len(acked)
            while len(acked) < count + 20 and not errors and time.monotonic() < deadline:
                time.sleep(0.005)
            failovers.append(time.monotonic() - killed_at)
            leaders = [row["worker"] for row in cluster.status()["bank"]]
            assert victim not in leaders or victim not in leaders_before, (leaders_before, leaders)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[:3]
        assert all(acked.values()), "a transfer was refused: the funds were wrong"
        assert max(failovers) < 15, failovers
        assert len(cluster.failovers) >= 2

        expected = {user: 1000 for user in range(users)}
        for number in acked:
            t_from, t_to, amount = number % users, (number * 3 + 1) % users, 1 + number % 5
            expected[t_from] -= amount
            expected[t_to] += amount
        stored = set()
        for partition in range(transfers.partitions):
            for record in transfers.read(partition, 0, limit=1_000_000):
                stored.add(int(record.event.transfer_id[1:]))
        assert set(acked) <= stored, "an acked transfer is missing after the failovers"
        funds = cluster.pstate("bank", "funds")
        settle = time.monotonic() + 60
        while True:  # credits are hops: at least once, and the example ignores a replayed one
            found = {user: funds[user].get() for user in range(users)}
            # Transfers stored but never acked (their client gave up) moved money too: add them.
            extra = {user: 0 for user in range(users)}
            for number in stored - set(acked):
                t_from, t_to, amount = number % users, (number * 3 + 1) % users, 1 + number % 5
                extra[t_from] -= amount
                extra[t_to] += amount
            if found == {user: expected[user] + extra[user] for user in range(users)}:
                break
            assert time.monotonic() < settle, (found, expected, extra)
            time.sleep(0.1)
        assert cluster.query("bank", "total_funds")() == 1000 * users


def test_a_stopped_leader_is_killed_and_its_follower_takes_over(tmp_path, kind):
    """A worker that stops answering (SIGSTOP here: stuck, or cut off) is killed after WORKER_SILENT_S;
    the follower takes over, and appends to its tasks flow again."""
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(bank, tasks=2, replication=2)
        wait_in_sync(cluster, "bank")
        deposits = cluster.depot("bank", "deposits")
        on_task = {task_for_key(user, 2): user for user in range(100)}
        deadline = time.monotonic() + 60
        append_retrying(deposits, Deposit(on_task[0], 5), "before", deadline)
        stopped = worker_pid(cluster, 0)
        os.kill(stopped, signal.SIGSTOP)
        try:
            started = time.monotonic()
            append_retrying(deposits, Deposit(on_task[0], 5), "after", deadline)  # a timeout, then it flows
            took = time.monotonic() - started
        finally:
            try:
                os.kill(stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert took < WORKER_SILENT_S + 15, took
        assert cluster.status()["bank"][0]["worker"] == 1, "the follower did not take over"
        assert cluster.pstate("bank", "funds")[on_task[0]].get() == 10


def test_an_update_and_a_reopen_keep_the_copies_in_sync(tmp_path, kind):
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(bank, tasks=2, replication=2)
        deposits = cluster.depot("bank", "deposits")
        for user in range(10):
            deposits.append(Deposit(user, 5))
        cluster.update(bank)  # new code over the same data: each leader begins a new term
        for user in range(10):
            deposits.append(Deposit(user, 5))
        assert sum(cluster.pstate("bank", "funds")[user].get() for user in range(10)) == 100
        wait_in_sync(cluster, "bank")
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(bank)  # reattaches, replicated as stored
        assert sum(cluster.pstate("bank", "funds")[user].get() for user in range(10)) == 100
        assert [[f["worker"] for f in row] for row in wait_in_sync(cluster, "bank")] == [[1], [0]]
