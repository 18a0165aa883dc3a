"""Kill a process mid-stream with SIGKILL; reopen its data: nothing acked is lost, nothing applied twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import headwater as hw
from tests.engine.children import lines_within
from tests.engine.crashing_app import Event, module

ROOT = Path(__file__).resolve().parents[2]
CHILD_SILENCE_MAX_S = 60


def run_and_kill(path: Path, run: int, acks_before_kill: int) -> set[int]:
    acked: set[int] = set()
    with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
        [sys.executable, "-m", "tests.engine.crashing_app", str(path), str(run)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as child:
        assert child.stdout is not None
        try:
            for line in lines_within(child.stdout, CHILD_SILENCE_MAX_S):
                if line.startswith("ACK "):
                    acked.add(int(line.split()[1]))
                    if len(acked) >= acks_before_kill:
                        break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        errors.seek(0)
        assert len(acked) >= acks_before_kill, f"the child stopped acking before it was killed:\n{errors.read()[-3000:]}"
    return acked


def test_sigkill_mid_stream_loses_no_ack_and_applies_single_task_writes_once(tmp_path):
    acked = set()
    for run in range(2):  # crash twice on the same data: recovery itself must survive a crash
        acked |= run_and_kill(tmp_path, run, acks_before_kill=300)
    with hw.InProcessCluster(tmp_path) as cluster:
        cluster.deploy(module())
        depot = cluster.depot("crashy", "events")
        stored: dict[int, int] = {}
        for partition in range(depot.partitions):
            for record in depot.read(partition, 0, limit=1_000_000):
                stored[record.event.id] = record.event.key
        assert acked <= set(stored), "an acked append is missing after the crash"
        # Processing resumes: full acks for new events on every key's partition.
        for key in range(7):
            assert depot.append(Event(-1 - key, key))["handle"] == -1 - key
        seen = cluster.pstate("crashy", "seen")
        for event_id, key in stored.items():
            assert seen[key][event_id].get() == 1, f"event {event_id} applied {seen[key][event_id].get()} times"
        echo = cluster.pstate("crashy", "echo")
        deadline = time.monotonic() + 30
        missing = set(stored)
        while missing and time.monotonic() < deadline:
            missing = {i for i in missing if not echo[i].get()}
            time.sleep(0.05)
        assert not missing, f"hops of {len(missing)} events never ran (at-least-once broken)"


def test_a_keyed_repeat_after_a_crash_waits_for_processing_and_returns_every_result(tmp_path):
    """A repeat of a keyed full-ack append whose processing a crash left unstarted, or half done
    (one topology finished, another's hop not), waits for that processing and returns the results
    the first append would have: the ones computed before the crash are kept with the key."""
    from tests.engine.keyed_crash_app import HALF_DONE, UNSTARTED, Job, module as keyed_module

    flag = tmp_path / "hold"
    data = tmp_path / "data"
    with subprocess.Popen(
        [sys.executable, "-m", "tests.engine.keyed_crash_app", str(data), str(flag)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as child:
        assert child.stdout is not None
        try:
            assert "READY\n" in lines_within(child.stdout, CHILD_SILENCE_MAX_S)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    flag.unlink()
    with hw.InProcessCluster(data) as cluster:
        cluster.deploy(keyed_module(str(flag)))
        depot = cluster.depot("keyed", "jobs")
        started, finished = cluster.pstate("keyed", "started"), cluster.pstate("keyed", "finished")
        for job_id in (HALF_DONE, UNSTARTED):
            result = depot.append(Job(job_id), idempotency_key=f"job-{job_id}")
            assert result.results == {"quick": job_id + 100, "hopper": job_id * 10}
            assert finished[job_id].get() == 1, "the repeat was answered before its processing finished"
            assert started[job_id].get() == 1
        stored = [r.event.id for p in range(depot.partitions) for r in depot.read(p)]
        assert sorted(stored) == [HALF_DONE, UNSTARTED], "a repeat appended again"
        # Finished now, the results stay with the key.
        again = depot.append(Job(HALF_DONE), idempotency_key=f"job-{HALF_DONE}")
        assert again.results == {"quick": HALF_DONE + 100, "hopper": HALF_DONE * 10}
