"""Exactly-once under injected faults and crashes: every PState ends equal to an oracle."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import headwater as hw
from tests.engine.children import lines_within
from tests.engine.crashing_microbatch_app import Move, module

ROOT = Path(__file__).resolve().parents[2]


def run_child(path: Path, run: int, *, kill_after: int | None) -> set[int]:
    """Run the appender; SIGKILL it after `kill_after` acks, or let it crash itself (None)."""
    acked: set[int] = set()
    mode = "between" if kill_after is None else "kill"
    with subprocess.Popen(
        [sys.executable, "-m", "tests.engine.crashing_microbatch_app", str(path), str(run), mode],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as child:
        assert child.stdout is not None
        try:
            for line in lines_within(child.stdout, 60):
                assert line.startswith("ACK "), line
                acked.add(int(line.split()[1]))
                if kill_after is not None and len(acked) >= kill_after:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
    return acked


def test_microbatch_state_equals_the_oracle_after_faults_and_crashes(tmp_path):
    rng = random.Random(7)
    acked: set[int] = set()
    acked |= run_child(tmp_path, 0, kill_after=rng.randint(300, 900))
    acked |= run_child(tmp_path, 1, kill_after=None)  # dies right after one task applied a batch
    acked |= run_child(tmp_path, 2, kill_after=rng.randint(300, 900))
    assert len(acked) > 600

    with hw.InProcessCluster(tmp_path) as cluster:
        cluster.deploy(module())
        moves = cluster.depot("oracle", "moves")
        markers = [Move(-1 - p, 0, 0, 0) for p in range(moves.partitions)]  # round-robin: one per partition
        moves.append_many(markers, ack="append")
        applied = cluster.pstate("oracle", "applied")
        deadline = time.monotonic() + 60
        while any(applied[m.id].get() != 1 for m in markers):
            assert time.monotonic() < deadline, "the microbatch never caught up after the crashes"
            time.sleep(0.02)

        stored = [r.event for p in range(moves.partitions) for r in moves.read(p, 0, limit=1_000_000)]
        assert acked <= {m.id for m in stored}, "an acked append was lost"
        expected_balance: Counter[int] = Counter()
        for move in stored:
            expected_balance[move.src] -= move.amount
            expected_balance[move.dst] += move.amount
        balance = cluster.pstate("oracle", "balance")
        for account in range(11):
            assert (balance[account].get() or 0) == expected_balance[account], f"account {account}"
        counts = Counter(applied[m.id].get() for m in stored)
        assert counts == Counter({1: len(stored)}), f"moves applied other than once: {counts}"
        assert cluster.dead_letters("oracle", "settle") == []
