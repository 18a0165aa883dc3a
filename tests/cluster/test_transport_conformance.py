"""The transport seam's contract, on every cluster kind: what a client hands a transport, and what the
tasks behind it answer, through the public methods and typed, encoded messages only.

One suite for every transport: `InProcessTransport` (tasks on threads of this process, reads
round-tripped through bytes in the test suite) and `SupervisorTransport` with the
`WorkerTransport`s of a `LocalCluster`'s worker processes behind it. Where a property differs
by design (`without_waiting`), each kind is held to its own.
"""

from __future__ import annotations

import copy
import time

import pytest

import headwater as hw
from examples.bank import Deposit, bank
from examples.bank_microbatch import bank as microbatch_bank
from headwater.client.replies import Waiter
from headwater.client.seam import WouldWait, without_waiting
from headwater.engine import messages
from headwater.engine.messages import AppendBatch, AppendRecord, Completed, Ping, Pong

REPLY_WAIT_S = 30.0  # the longest any one reply may take on a shared, loaded machine
RECOVERY_WAIT_S = 60.0  # the longest a LocalCluster may take to serve again after a worker restart
HELD_S = 1.0  # how long a commit must stay held off while a consistent read runs


class RecordingWaiter(Waiter):
    """A Ping's waiter that notes, in one shared list, the order the Pongs reached the router."""

    def __init__(self, arrivals: list[tuple[int, int]]) -> None:
        super().__init__(-1)
        self.arrivals = arrivals

    def on_pong(self, message: Pong) -> None:
        self.arrivals.append((message.request, message.task))
        super().on_pong(message)


def users_on(deployment, partition: int, count: int) -> list[int]:
    """The first `count` user ids whose deposits go to `partition` of the bank's deposits depot."""
    runtime = deployment.runtime.depot("deposits")
    users: list[int] = []
    user = 0
    while len(users) < count:
        _, validated = runtime.codec.encode(Deposit(user, 1))
        if runtime.partition_for(validated) == partition:
            users.append(user)
        user += 1
    return users


def deposit_record(deployment, event: Deposit, ack: str, waiter: Waiter) -> AppendRecord:
    """A client append of `event` whose reply goes to `waiter` (registered here)."""
    depot = deployment.runtime.depot("deposits")
    data, validated = depot.codec.encode(event)
    partition = depot.partition_for(validated)
    waiter.partition = partition
    return AppendRecord(depot.depot_id, partition, data, ack, deployment.client_id, deployment.router.register(waiter))


def completed(waiter: Waiter) -> Completed:
    assert waiter.wait_done(REPLY_WAIT_S), f"no reply to request {waiter.request} within {REPLY_WAIT_S}s"
    assert waiter.busy is None, f"request {waiter.request} was refused: {waiter.busy}"
    assert waiter.completed is not None
    return waiter.completed


def test_messages_from_one_sender_reach_each_task_in_send_order(any_cluster):
    any_cluster.deploy(bank, tasks=4)
    deployment = any_cluster.deployment("bank")
    if isinstance(any_cluster, hw.LocalCluster):  # the tasks are on both workers
        assert len({deployment.where(task) for task in range(4)}) == 2
    pings = 200
    arrivals: dict[int, list[tuple[int, int]]] = {task: [] for task in range(4)}
    sent: dict[int, list[int]] = {task: [] for task in range(4)}
    waiters = []
    for _ in range(pings):
        for task in (2, 0, 3, 1):  # interleaved: every task's messages mixed with the others'
            waiter = RecordingWaiter(arrivals[task])
            request = deployment.router.register(waiter)
            deployment.transport.send(task, messages.encode(Ping(deployment.client_id, request)))
            sent[task].append(request)
            waiters.append(waiter)
    for waiter in waiters:
        assert waiter.wait_done(REPLY_WAIT_S), f"no Pong for request {waiter.request}"
    for task in range(4):
        assert [request for request, _ in arrivals[task]] == sent[task], f"task {task} answered out of send order"
        assert {answered_by for _, answered_by in arrivals[task]} == {task}


def test_submit_append_replies_reach_their_waiters_and_a_batch_lands_in_order(any_cluster):
    any_cluster.deploy(bank, tasks=2)
    deployment = any_cluster.deployment("bank")
    transport = deployment.transport
    deposits = any_cluster.depot("bank", "deposits")

    # One AppendRecord per task, full ack: the Completed names its request, partition and offset,
    # and carries the stream topology's result for this event (the user's balance).
    for partition in range(2):
        user = users_on(deployment, partition, 1)[0]
        waiter = Waiter(partition)
        record = deposit_record(deployment, Deposit(user, 7 + partition), "full", waiter)
        assert record.partition == partition
        transport.submit_append(partition, messages.encode(record))
        done = completed(waiter)
        assert (done.request, done.partition, done.offset) == (record.request, partition, 0)
        assert done.failure is None and done.errors == []
        assert messages.loads(done.results["deposit"]) == 7 + partition

    # Ack "append": the Appended reply (durable at its offset) reaches a durable-only waiter.
    user = users_on(deployment, 1, 1)[0]
    durable = Waiter(1, durable=True)
    record = deposit_record(deployment, Deposit(user, 1), "append", durable)
    transport.submit_append(1, messages.encode(record))
    assert durable.wait_durable(REPLY_WAIT_S)
    assert durable.offset == 1 and durable.completed is None and durable.busy is None

    # An AppendBatch to task 1 (the caller may run its round): consecutive offsets in input order,
    # and each reply to its own waiter, with the balance after its own event.
    start = deposits.partition_info(1).end_offset
    assert start == 2
    first, second = users_on(deployment, 1, 2)
    assert first == user  # it has 8 + 1 from the appends above
    events = [Deposit(first if i % 2 else second, 10 + i) for i in range(12)]
    waiters = [Waiter(1) for _ in events]
    records = [deposit_record(deployment, event, "full", waiter) for event, waiter in zip(events, waiters, strict=True)]
    assert {r.partition for r in records} == {1}
    transport.submit_append(1, messages.encode(AppendBatch(records)), caller_waits=True, timeout_s=REPLY_WAIT_S)
    balances = {first: 9, second: 0}
    for index, (event, waiter, record) in enumerate(zip(events, waiters, records, strict=True)):
        done = completed(waiter)
        assert (done.request, done.partition, done.offset) == (record.request, 1, start + index)
        balances[event.user_id] += event.amount
        assert messages.loads(done.results["deposit"]) == balances[event.user_id]
    stored = deposits.read(1, start, start + len(events) + 5)
    assert [(r.offset, r.event) for r in stored] == [(start + i, event) for i, event in enumerate(events)]


def test_reads_cross_as_data(any_cluster):
    any_cluster.deploy(bank, tasks=2)
    deployment = any_cluster.deployment("bank")
    transport = deployment.transport
    deposits = any_cluster.depot("bank", "deposits")
    depot_id = deployment.runtime.depot("deposits").depot_id
    counts = {0: 3, 1: 5}
    for partition, count in counts.items():
        deposits.append_many([Deposit(user, 1) for user in users_on(deployment, partition, count)],
                             ack="append")
    for partition, count in counts.items():
        end = transport.read(partition, ("depot_end", depot_id))
        assert end == count == deposits.partition_info(partition).end_offset

    # A read that fails on the task raises the same error class here, with the task's message.
    with pytest.raises(hw.NotFound, match="no_such_topology") as raised:
        transport.read(0, ("mb_status", "no_such_topology"))
    assert type(raised.value) is hw.NotFound
    with pytest.raises(hw.NotFound) as missing:
        transport.read(1, ("pstate", "no_such_pstate", (1,), "get", (), {}))
    assert type(missing.value) is hw.NotFound and "no_such_pstate" in str(missing.value)

    # Every answer is the caller's own object: changing it changes nothing the next read sees.
    for task, request in [(1, ("depot_read", depot_id, 0, 5)), (0, ("progress",)),
                          (1, ("pstate", "funds", (), "items", (), {}))]:
        first = transport.read(task, request)
        assert first, f"{request} read nothing: the check below would prove nothing"
        kept = copy.deepcopy(first)
        first.clear()
        second = transport.read(task, request)
        assert second == kept and second is not first


def test_read_many_answers_in_request_order_across_tasks(any_cluster):
    any_cluster.deploy(bank, tasks=4)
    deployment = any_cluster.deployment("bank")
    transport = deployment.transport
    deposits = any_cluster.depot("bank", "deposits")
    depot_id = deployment.runtime.depot("deposits").depot_id
    for partition in range(4):  # partition p holds p + 1 records: every answer below differs
        deposits.append_many([Deposit(user, 1) for user in users_on(deployment, partition, partition + 1)],
                             ack="append")
    requests = []
    for i in range(24):
        task = (3 * i + i // 4) % 4
        requests.append((task, ("depot_end", depot_id) if i % 3 else ("depot_read", depot_id, i % (task + 1), 9)))
    results = transport.read_many(requests)
    assert len(results) == len(requests)
    for (task, request), result in zip(requests, results, strict=True):
        if request[0] == "depot_end":
            assert result == task + 1
        else:
            assert [offset for offset, _, _ in result] == list(range(request[2], task + 1))
    assert results == [transport.read(task, request) for task, request in requests]


def test_consistent_reads_hold_microbatch_commits_off(any_cluster):
    any_cluster.deploy(microbatch_bank, tasks=2)
    deployment = any_cluster.deployment("mbbank")
    transport = deployment.transport
    funds = any_cluster.pstate("mbbank", "funds")
    users = range(6)
    with transport.consistent_reads():
        any_cluster.depot("mbbank", "deposits").append_many([Deposit(user, 10) for user in users], ack="append")
        deadline = time.monotonic() + REPLY_WAIT_S
        while (status := transport.read(0, ("mb_status", "banking")))["phase"] != "decided":
            assert status["processed"] == 0, "a batch committed while a consistent read held commits off"
            assert time.monotonic() < deadline, "the batch was never decided"
            time.sleep(0.005)
        # Decided: the batch now waits for nothing but the hold.
        with pytest.raises(hw.AckTimeout):
            any_cluster.wait_for_microbatch("mbbank", "banking", processed=len(users), timeout=HELD_S)
        status = transport.read(0, ("mb_status", "banking"))
        assert (status["phase"], status["processed"]) == ("decided", 0)
        assert [funds[user].get(0) for user in users] == [0] * len(users)  # nothing of the batch applied
    any_cluster.wait_for_microbatch("mbbank", "banking", processed=len(users), timeout=REPLY_WAIT_S)
    assert [funds[user].get() for user in users] == [10] * len(users)


def stop_module(cluster, name: str, how: str) -> None:
    if how == "destroy":
        cluster.destroy(name)
    else:
        cluster.close()


@pytest.mark.parametrize("how", ["destroy", "close"])
def test_after_the_module_stops_appends_and_reads_raise_unavailable(any_cluster, how):
    any_cluster.deploy(bank, tasks=2)
    deployment = any_cluster.deployment("bank")
    transport = deployment.transport
    depot_id = deployment.runtime.depot("deposits").depot_id
    pending = Waiter(0)
    appends = []
    for partition in range(2):
        user = users_on(deployment, partition, 1)[0]
        appends.append(messages.encode(deposit_record(deployment, Deposit(user, 1), "full", Waiter(partition))))
    deployment.router.register(pending)  # a request still waiting when the module stops
    stop_module(any_cluster, "bank", how)
    assert transport.closed
    # A waiter still registered hears Unavailable, rather than nothing until its timeout.
    assert pending.wait_done(REPLY_WAIT_S)
    assert pending.completed is not None and pending.completed.failure_kind == "Unavailable"
    for task in range(2):
        with pytest.raises(hw.Unavailable):
            transport.submit_append(task, appends[task])
        with pytest.raises(hw.Unavailable):
            transport.submit_append(task, messages.encode(AppendBatch([messages.decode(appends[task])])),
                                    caller_waits=True, timeout_s=1.0)
        with pytest.raises(hw.Unavailable):
            transport.read(task, ("depot_end", depot_id))
    with pytest.raises(hw.Unavailable):
        transport.read_many([(1, ("depot_end", depot_id)), (0, ("depot_end", depot_id))])


@pytest.mark.parametrize("how", ["destroy", "close"])
def test_after_the_module_stops_send_raises_unavailable(any_cluster, how):
    any_cluster.deploy(bank, tasks=2)
    deployment = any_cluster.deployment("bank")
    transport = deployment.transport
    stop_module(any_cluster, "bank", how)
    for task in range(2):
        with pytest.raises(hw.Unavailable):
            transport.send(task, messages.encode(Ping(deployment.client_id, deployment.router.register(Waiter(-1)))))


def test_without_waiting_reads_only_what_this_process_serves(any_cluster):
    any_cluster.deploy(bank, tasks=2)
    deployment = any_cluster.deployment("bank")
    transport = deployment.transport
    deposits = any_cluster.depot("bank", "deposits")
    depot_id = deployment.runtime.depot("deposits").depot_id
    deposits.append_many([Deposit(user, 1) for user in users_on(deployment, 1, 2)], ack="append")
    requests = [(task, ("depot_end", depot_id)) for task in range(2)]
    expected = [0, 2]
    assert [transport.read(task, r) for task, r in requests] == expected
    if isinstance(any_cluster, hw.LocalCluster):  # every task is in a worker process: none is read here
        with without_waiting():
            for task, r in requests:
                with pytest.raises(WouldWait):
                    transport.read(task, r)
            with pytest.raises(WouldWait):
                transport.read_many(requests)
    else:  # every task is in this process: every read is served
        with without_waiting():
            assert [transport.read(task, r) for task, r in requests] == expected
            assert transport.read_many(requests) == expected
    assert [transport.read(task, r) for task, r in requests] == expected  # outside the block, reads wait again
    assert transport.read_many(requests) == expected


def wait_until_up(cluster, module: str) -> list[dict]:
    deadline = time.monotonic() + RECOVERY_WAIT_S
    while True:
        try:
            tasks = cluster.status()[module]
            if all(t["up"] for t in tasks):
                return tasks
        except hw.Unavailable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"module {module!r} did not serve again within {RECOVERY_WAIT_S}s")
        time.sleep(0.05)


def test_a_message_that_is_not_bytes_is_refused_and_a_garbled_one_kills_no_task(any_cluster):
    any_cluster.deploy(bank, tasks=2)
    deployment = any_cluster.deployment("bank")
    before = any_cluster.status()["bank"]
    assert all(t["up"] for t in before)
    not_bytes = messages.encode(Ping(deployment.client_id, 0)).decode("latin-1")  # a message, as a str
    with pytest.raises(TypeError, match="as bytes"):  # refused where it is handed over
        deployment.transport.send(0, not_bytes)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="as bytes"):
        deployment.transport.submit_append(1, bytearray(messages.encode(Ping(deployment.client_id, 0))))
    for task in range(2):  # bytes, but no message: the task drops it and goes on
        deployment.transport.send(task, b"\x93garbled")
        deployment.transport.send(task, b"")
    after = any_cluster.status()["bank"]  # every task answers a Ping sent after the bad messages
    assert after == before, f"a task did not survive a garbled message: {after}"
    for task in range(2):
        user = users_on(deployment, task, 1)[0]
        assert any_cluster.depot("bank", "deposits").append(Deposit(user, 3), timeout=REPLY_WAIT_S)["deposit"] == 3
