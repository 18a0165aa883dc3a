"""`ctx.batch_id` in microbatch topologies: the same on every attempt of a batch (a retry after a
failure, a rerun after a worker is killed), over the same records, and different between batches."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import headwater as hw
from headwater.schema import task_for_key
from tests.clusters import LOCAL_WORKERS

RECOVERY_S_MAX = 60


@dataclass
class Item:
    key: int
    n: int


def module(log: Path, flag: Path, *, hang: bool = False) -> hw.Module:
    """Logs "<where> <key> <n> <batch id> <pid>" per call. The record with n == -1 fails (or, with
    `hang`, blocks) the first time, while `flag` does not exist, creating it."""
    m = hw.Module("batches")
    items = m.depot("items", Item, partition_by="key")
    log_path, flag_path = str(log), str(flag)

    def note(where: str, ctx: hw.Context, item: Item) -> None:
        with open(log_path, "a") as f:
            f.write(f"{where} {item.key} {item.n} {ctx.batch_id} {os.getpid()}\n")

    @m.microbatch(items)
    def ingest(ctx: hw.Context, item: Item) -> None:
        note("handler", ctx, item)
        if item.n == -1 and not os.path.exists(flag_path):
            open(flag_path, "w").close()
            if hang:
                time.sleep(RECOVERY_S_MAX * 2)  # until the test kills this worker
            raise RuntimeError("the external system failed once")
        ctx.hop(item.key, also, item)

    @m.step
    def also(ctx: hw.Context, item: Item) -> None:
        note("step", ctx, item)

    @m.stream(items)
    def streamed(ctx: hw.Context, item: Item) -> int | None:
        return ctx.batch_id

    return m


def read_log(log: Path) -> list[tuple[str, int, int, int, int]]:
    rows = []
    for line in log.read_text().splitlines():
        where, key, n, batch, pid = line.split()
        rows.append((where, int(key), int(n), int(batch), int(pid)))
    return rows


def test_a_failed_batch_is_retried_under_the_same_batch_id_and_the_next_batch_gets_another(cluster, tmp_path):
    log, flag = tmp_path / "log", tmp_path / "flag"
    cluster.deploy(module(log, flag), tasks=2)
    items = cluster.depot("batches", "items")
    assert items.append(Item(1, 1))["streamed"] is None  # no batch in a stream topology
    items.append(Item(2, -1), ack="append")
    cluster.wait_for_microbatch("batches", "ingest", processed=2)
    items.append(Item(3, 3), ack="append")
    cluster.wait_for_microbatch("batches", "ingest", processed=3)
    rows = read_log(log)
    failing = [batch for where, key, _, batch, _ in rows if where == "handler" and key == 2]
    assert len(failing) == 2 and failing[0] == failing[1]  # failed, then retried: the same batch
    step = [batch for where, key, _, batch, _ in rows if where == "step" and key == 2]
    assert step == failing[1:]  # the step it hopped to, in the same batch
    later = {batch for where, key, _, batch, _ in rows if key == 3}
    assert len(later) == 1 and later.pop() > failing[0]
    assert all(batch >= 1 for *_, batch, _ in rows)


def test_a_batch_rerun_after_its_worker_is_killed_keeps_its_id_and_its_records(tmp_path):
    """Task 1 hangs in the batch; task 0 has run its part. More records reach task 0's partition, then
    task 1's worker is killed: the batch runs again under the same id over the same records of task 0,
    and the new records come in the next batch (had the batch been planned again, it would hold them)."""
    log, flag = tmp_path / "log", tmp_path / "flag"
    zero = [k for k in range(100) if task_for_key(k, 2) == 0][:6]
    one = next(k for k in range(100) if task_for_key(k, 2) == 1)
    with hw.LocalCluster(tmp_path / "data", workers=LOCAL_WORKERS) as cluster:
        cluster.deploy(module(log, flag, hang=True), tasks=2)
        items = cluster.depot("batches", "items")
        cluster.pause("batches", "ingest")
        for n, key in enumerate(zero[:3]):
            items.append(Item(key, n), ack="append")
        items.append(Item(one, -1), ack="append")
        cluster.resume("batches", "ingest")
        deadline = time.monotonic() + RECOVERY_S_MAX
        while not (flag.exists() and sum(1 for row in read_log(log) if row[0] == "handler" and row[1] in zero) == 3):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first = read_log(log)
        for n, key in enumerate(zero[3:], start=3):
            items.append(Item(key, n), ack="append")  # task 0 is not hung: durable in its partition
        hung_pid = next(t["pid"] for t in cluster.status()["batches"] if t["task"] == 1)
        os.kill(hung_pid, signal.SIGKILL)
        cluster.wait_for_microbatch("batches", "ingest", processed=7, timeout=RECOVERY_S_MAX)
    rows = read_log(log)
    batch = {row[3] for row in first if row[0] == "handler"}
    assert len(batch) == 1
    batch_id = batch.pop()
    rerun = [row for row in rows[len(first):] if row[0] == "handler" and row[3] == batch_id]
    assert sorted(row[2] for row in rerun if row[1] in zero) == [0, 1, 2]  # the same records of task 0
    assert [row[2] for row in rerun if row[1] == one] == [-1]  # and of task 1, rerun in a new process
    assert {row[3] for row in rows if row[0] == "handler" and row[2] >= 3} == {batch_id + 1}
