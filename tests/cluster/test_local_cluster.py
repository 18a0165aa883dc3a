"""LocalCluster: worker processes on this machine, killed with SIGKILL, restarted, losing nothing acked."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid

import pytest

import headwater as hw
from headwater.cluster.inprocess import STATUS_WAIT_MAX_S
from examples.bank_microbatch import Deposit, Transfer, bank as microbatch_bank
from tests.clusters import open_cluster
from tests.engine.crashing_app import Event, module as crashy_module

RECOVERY_S_MAX = 60  # the longest the cluster may take to serve again after a worker died


def append_retrying(depot, event, key: str, deadline: float):
    """Append with an idempotency key, retrying while the workers restart (safe: the key dedupes)."""
    while True:
        try:
            return depot.append(event, idempotency_key=key, timeout=10)
        except hw.Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Appenders:
    """Threads appending `make_event(event_id)` with idempotency keys (`key_prefix` + id), retried
    while workers restart, until `stop()`; `acked` maps each acked event id to its `topology`'s result."""

    def __init__(self, depot, make_event, threads: int, key_prefix: str, deadline: float,
                 topology: str = "handle") -> None:
        self._topology = topology
        self.acked: dict[int, int] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._depot, self._make_event, self._key_prefix, self.deadline = depot, make_event, key_prefix, deadline
        self._threads = [threading.Thread(target=self._append, args=(w,)) for w in range(threads)]
        for thread in self._threads:
            thread.start()

    def _append(self, worker: int) -> None:
        for i in range(100_000):
            if self._stop.is_set():
                return
            event_id = worker * 1_000_000 + i
            try:
                self.acked[event_id] = append_retrying(self._depot, self._make_event(event_id),
                                                       f"{self._key_prefix}{event_id}", self.deadline)[self._topology]
            except BaseException as e:  # reported by stop()
                self.errors.append(e)
                return

    def wait_for(self, count: int) -> None:
        """Until `count` appends are acked, an appender failed, or the deadline passed."""
        while len(self.acked) < count and not self.errors and time.monotonic() < self.deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(RECOVERY_S_MAX)
        assert not self.errors, self.errors[:3]


def worker_pid(cluster: hw.LocalCluster, worker: int) -> int:
    return next(t["pid"] for tasks in cluster.status().values() for t in tasks if t["worker"] == worker)


def kill_worker(cluster: hw.LocalCluster, worker: int) -> int:
    pid = worker_pid(cluster, worker)
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_killed_worker_comes_back_and_nothing_acked_is_lost_or_applied_twice(tmp_path, kind):
    """SIGKILL one worker's process under four appenders (on Ray, Ray reports its actor dead): it
    comes back alone, and the appends go on, retried with their keys while its tasks are Unavailable."""
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(crashy_module(), tasks=3)
        depot = cluster.depot("crashy", "events")
        appenders = Appenders(depot, lambda event_id: Event(event_id, event_id % 7), 4, "e",
                              time.monotonic() + RECOVERY_S_MAX)
        appenders.wait_for(200)
        survivor = worker_pid(cluster, 0)
        killed = kill_worker(cluster, 1)
        before = len(appenders.acked)
        appenders.wait_for(before + 200)
        appenders.stop()
        acked, deadline = appenders.acked, appenders.deadline
        assert len(acked) >= before + 200, "the cluster did not serve again after the worker died"
        assert killed not in {t["pid"] for tasks in cluster.status().values() for t in tasks}
        assert worker_pid(cluster, 0) == survivor, "only the worker that died restarts"
        assert all(result == event_id for event_id, result in acked.items())

        stored: dict[int, int] = {}
        for partition in range(depot.partitions):
            for record in depot.read(partition, 0, limit=1_000_000):
                assert record.event.id not in stored, f"event {record.event.id} appended twice"
                stored[record.event.id] = record.event.key
        assert set(acked) <= set(stored), "an acked append is missing after the worker died"
        seen = cluster.pstate("crashy", "seen")
        for event_id, key in stored.items():  # single-task writes: exactly once
            assert seen[key][event_id].get() == 1, f"event {event_id} applied {seen[key][event_id].get()} times"
        echo = cluster.pstate("crashy", "echo")
        missing = set(stored)
        while missing and time.monotonic() < deadline:  # hops: at least once
            missing = {i for i in missing if not echo[i].get()}
            time.sleep(0.05)
        assert not missing, f"hops of {len(missing)} events never ran"


@pytest.mark.parametrize("kind", ["local", "ray"])
@pytest.mark.parametrize("replication", [1, 2], ids=["unreplicated", "replicated"])
@pytest.mark.parametrize("victim", [0, 1], ids=["coordinators-worker", "a-participants-worker"])
def test_microbatch_stays_exactly_once_when_a_worker_dies(tmp_path, victim, replication, kind):
    """Replicated, the dead worker's tasks (the coordinator among them) move to their followers."""
    with open_cluster(kind, tmp_path) as cluster:
        cluster.deploy(microbatch_bank, tasks=4, replication=replication)
        deadline = time.monotonic() + RECOVERY_S_MAX
        deposits = cluster.depot("mbbank", "deposits")
        for user in range(8):
            append_retrying(deposits, Deposit(user, 1000), f"d{user}", deadline)
        transfers = cluster.depot("mbbank", "transfers")
        for i in range(300):
            if i == 150:
                while not all(f["in_sync"] for row in cluster.status()["mbbank"] for f in row["followers"]):
                    time.sleep(0.05)
                kill_worker(cluster, victim)  # worker 0 hosts task 0, the coordinator
            append_retrying(transfers, Transfer(f"t{i}", i % 8, (i + 3) % 8, 1 + i % 5), f"t{i}", deadline)
        while True:
            try:
                cluster.wait_for_microbatch("mbbank", "banking", processed=1, timeout=5)
                total = cluster.query("mbbank", "total_funds")()
                log = cluster.pstate("mbbank", "transfer_log")
                logged = sum(1 for u in range(8) for _ in log[u].keys())
                if logged == 300:
                    break
            except (hw.Unavailable, hw.AckTimeout):
                pass
            assert time.monotonic() < deadline, "the microbatch topology never caught up"
            time.sleep(0.05)
        assert total == 8000, "money was created or lost"
        if replication == 2:
            assert all(row["worker"] != victim for row in cluster.status()["mbbank"]), "no follower took over"


def test_a_module_that_cannot_reach_the_workers_is_a_definition_error(tmp_path):
    m = hw.Module("local_lock")
    jobs = m.depot("jobs", int)
    lock = threading.Lock()

    @m.stream(jobs)
    def guarded(ctx: hw.Context, job: int) -> int:
        with lock:
            return job

    with hw.LocalCluster(tmp_path, workers=1) as cluster:
        with pytest.raises(hw.DefinitionError, match="cannot be sent to the worker processes.*lock"):
            cluster.deploy(m)


def test_status_says_which_worker_hosts_each_task(tmp_path):
    with hw.LocalCluster(tmp_path, workers=2) as cluster:
        cluster.deploy(microbatch_bank, tasks=3)
        tasks = cluster.status()["mbbank"]
        assert [t["worker"] for t in tasks] == [0, 1, 0]
        assert all(t["up"] and t["pid"] != os.getpid() for t in tasks)


def test_in_process_status_has_the_same_shape(cluster):
    cluster.deploy(microbatch_bank, tasks=2)
    assert cluster.status() == {"mbbank": [{"task": t, "worker": None, "pid": os.getpid(), "up": True,
                                            "appends_in_flight": 0, "error": None, "followers": []} for t in range(2)]}


def test_status_asks_each_task_and_a_task_that_cannot_answer_is_not_up(any_cluster, tmp_path):
    """Liveness is a request answered from the task's rounds: a task held in a long handler is not up
    until it answers again, and says how many appends it holds meanwhile."""
    flag = tmp_path / "go"
    m = hw.Module("held")
    jobs = m.depot("jobs", Deposit, partitioned=False)  # every record on task 0

    @m.stream(jobs)
    def hold(ctx: hw.Context, deposit: Deposit) -> None:
        import os
        import time

        deadline = time.monotonic() + 30
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.005)

    any_cluster.deploy(m, tasks=2)
    any_cluster.depot("held", "jobs").append(Deposit(1, 1), ack="append")
    started = time.monotonic()
    tasks = any_cluster.status()["held"]
    assert [t["up"] for t in tasks] == [False, True] and tasks[0]["appends_in_flight"] is None
    assert time.monotonic() - started < STATUS_WAIT_MAX_S + 1  # bounded by its wait, not by the handler
    flag.touch()
    deadline = time.monotonic() + 10
    tasks = any_cluster.status()["held"]
    while not all(t["up"] for t in tasks):
        assert time.monotonic() < deadline
        tasks = any_cluster.status()["held"]
    assert [t["appends_in_flight"] for t in tasks] == [0, 0]


def test_a_path_with_a_function_in_it_reads_on_every_cluster_kind(any_cluster):
    any_cluster.deploy(microbatch_bank, tasks=2)
    deposits = any_cluster.depot("mbbank", "deposits")
    deposits.append_many([Deposit(user, 10 * (user + 1)) for user in range(4)], ack="append")
    any_cluster.wait_for_microbatch("mbbank", "banking", processed=4)
    funds = any_cluster.pstate("mbbank", "funds")
    rich = [user for user in range(4) if funds[user].select(hw.filter(lambda amount: amount > 20)) != []]
    assert rich == [2, 3]
    assert funds[3].select(hw.view(lambda amount: amount // 10)) == [4]


APP_WITH_STRING_ANNOTATIONS = '''
from __future__ import annotations

import uuid
from dataclasses import dataclass

import headwater as hw


@dataclass
class Address:
    city: str


@dataclass
class Order:
    id: uuid.UUID
    shipping: Address


shop = hw.Module("shop")
orders = shop.depot("orders", Order, partition_by="id")
cities = shop.pstate("cities", hw.Map(uuid.UUID, str))


@shop.stream(orders)
def record(ctx: hw.Context, order: Order) -> str:
    ctx.pstate(cities)[order.id].set(order.shipping.city)
    return order.shipping.city
'''


def test_an_app_file_with_string_annotations_runs_on_workers(tmp_path):
    """An app loaded from its path (`headwater serve app.py --workers N`) travels by value; its
    classes' annotations (`from __future__ import annotations`) must resolve in the workers too."""
    from headwater.server.run import load_modules

    path = tmp_path / "shop_app.py"
    path.write_text(APP_WITH_STRING_ANNOTATIONS)
    [shop] = load_modules(path)
    order_type = shop.depots["orders"].event_type
    with hw.LocalCluster(tmp_path / "data", workers=2) as cluster:
        cluster.deploy(shop, tasks=2)
        address_type = vars(sys.modules[order_type.__module__])["Address"]
        order = order_type(uuid.uuid4(), address_type("Lyon"))
        assert cluster.depot("shop", "orders").append(order)["record"] == "Lyon"
        assert cluster.pstate("shop", "cities")[order.id].get() == "Lyon"


class _SlowFront:
    """A front that takes `delay_s` to start, and says which process runs it."""

    def __init__(self, delay_s: float) -> None:
        time.sleep(delay_s)
        self.pid = os.getpid()

    def info(self) -> dict:
        return {"front_pid": self.pid}

    def stop(self) -> None:
        pass


def slow_front(cluster: object, delay_s: float) -> _SlowFront:
    return _SlowFront(delay_s)


def test_a_worker_that_dies_while_the_fronts_start_gets_them_after_its_restart(tmp_path):
    with hw.LocalCluster(tmp_path, workers=2) as cluster:
        cluster.deploy(microbatch_bank, tasks=2)
        first = {t["worker"]: t["pid"] for t in cluster.status()["mbbank"]}
        killer = threading.Timer(0.3, os.kill, (first[1], signal.SIGKILL))
        killer.start()
        cluster.start_fronts(slow_front, 1.0)  # worker 1 dies under it: no error, the restart starts them
        killer.join()
        deadline = time.monotonic() + 30
        while True:
            tasks = cluster.status()["mbbank"]
            restarted = {t["worker"] for t in tasks if t["pid"] != first[t["worker"]]}
            if all(t["up"] and t.get("front_pid") == t["pid"] for t in tasks) and restarted == {1}:
                break
            assert time.monotonic() < deadline, f"the fronts did not run on the restarted worker: {tasks}"
            time.sleep(0.1)
        cluster.stop_fronts()


def exploding_module(marker: str) -> hw.Module:
    m = hw.Module("exploding")
    jobs = m.depot("jobs", str, partitioned=False)  # on task 0, on worker 0
    done = m.pstate("done", hw.Map(str, bool), partitioned=False)

    @m.stream(jobs)
    def run(ctx: hw.Context, job: str) -> None:
        if job == "explode" and not os.path.exists(marker):
            open(marker, "w").close()
            raise SystemExit("the task's thread ends: an internal error, not a handler's")
        ctx.pstate(done)[job].set(True)

    return m


def test_a_task_that_stopped_on_an_internal_error_serves_again_after_its_worker_restarts(tmp_path):
    with hw.LocalCluster(tmp_path / "data", workers=2) as cluster:
        cluster.deploy(exploding_module(str(tmp_path / "exploded")), tasks=2)
        jobs = cluster.depot("exploding", "jobs")
        jobs.append("explode", ack="append")
        deadline = time.monotonic() + RECOVERY_S_MAX
        while True:  # until the supervisor hears of the failure
            try:
                jobs.append("probe", ack="append")
            except hw.Unavailable as e:
                assert "internal error" in str(e)
                break
            assert time.monotonic() < deadline, "the failure was never reported"
            time.sleep(0.05)
        kill_worker(cluster, 0)
        assert append_retrying(jobs, "after", "after", time.monotonic() + RECOVERY_S_MAX)["run"] is None
        done = cluster.pstate("exploding", "done")
        assert done["explode"].get() and done["after"].get()  # the record it stopped on ran on recovery
