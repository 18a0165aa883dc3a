"""Where a full-ack append's time goes: the registration workload of workload 1, instrumented.

Three views of the same closed loop (`--clients` threads, `--seconds`):

1. CPU per append by thread (client threads, task threads), read from /proc/self/task/*/stat —
   what the process spends, whoever spends it. A full-ack appender may run the task's round on
   its own thread, so client threads' CPU includes engine work: phase 2 separates it.
2. CPU per append by phase of the task's rounds, on whichever thread runs them
   (`time.thread_time` around the engine's methods that exist in this version: the whole round,
   drain, persist, pump, invoke (the handler), end of round, RocksDB write and sync).
3. With py-spy installed, a sampling profile of the rounds (task threads, and appenders' threads
   inside `run_round_here`; attached for a few seconds in the middle of the run): the functions
   the samples land in, waits on locks and queues removed.

    .venv/bin/python -m bench.profile_append --clients 16 --seconds 6 [--py-spy]
    .venv/bin/python -m bench.profile_append --clients 1
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PHASES = ["_run_round", "_drain", "_handle", "_persist", "_pump", "_run_root", "invoke", "_commit", "_end_round"]
# Frames where a sampled thread is blocked, not computing (lock, queue and sync waits).
WAITS = ("_Signal.wait", "Task._drain", "Thread._wait_for_tstate_lock", "Event.wait", "Condition.wait",
         "Semaphore.acquire", "Waiter.wait_done", "RocksStore.sync")


def _thread_cpu() -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def _role(name: str) -> str:
    if name.startswith("client"):
        return "client threads (append, wait for the ack, and the rounds they run)"
    if "-task-" in name:
        return "task threads (rounds: engine + handler)"
    return "other threads"


def measure(clients: int, seconds: float, tasks: int, *, instrument: bool = True) -> dict[str, Any]:
    import headwater as hw
    from examples.registration import UserSignUp, registration
    from headwater.engine import task as task_module
    from headwater.storage import rocks

    phase_cpu: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    measuring = threading.Event()

    def wrap(cls: Any, name: str, label: str) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not measuring.is_set():
                return original(*args, **kwargs)
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                entry = phase_cpu[label]
                entry[0] += time.thread_time() - started
                entry[1] += 1

        setattr(cls, name, timed)

    for name in PHASES if instrument else ():
        if hasattr(task_module.Task, name):
            wrap(task_module.Task, name, f"Task.{name}")
    for name in ("write", "sync") if instrument else ():
        wrap(rocks.RocksStore, name, f"RocksStore.{name}")
    ms = int(time.time() * 1000)
    with tempfile.TemporaryDirectory(prefix="headwater-profile-") as directory, hw.InProcessCluster(directory) as cluster:
        cluster.deploy(registration, tasks=tasks)
        depot = cluster.depot("registration", "registrations")
        for i in range(500):
            depot.append(UserSignUp(f"warm{i}@example.com", "h", ms))
        counts = [0] * clients
        done = threading.Event()

        def client(n: int) -> None:
            i = 0
            while not done.is_set():
                depot.append(UserSignUp(f"c{n}-{i}@example.com", "h", ms))
                i += 1
                counts[n] = i

        threads = [threading.Thread(target=client, args=(n,), name=f"client-{n}") for n in range(clients)]
        names_before = {t.native_id: t.name for t in threading.enumerate()}
        before = _thread_cpu()
        measuring.set()
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        # Read while the clients still run (they stop only when told), so every thread is counted.
        names = names_before | {t.native_id: t.name for t in threading.enumerate()}
        after = _thread_cpu()
        appends = sum(counts)
        elapsed = time.perf_counter() - started
        measuring.clear()
        done.set()
        for t in threads:
            t.join()
    by_role: dict[str, float] = collections.defaultdict(float)
    for tid, cpu in after.items():
        by_role[_role(names.get(tid, "?"))] += cpu - before.get(tid, 0.0)
    return {
        "clients": clients, "tasks": tasks, "appends": appends, "appends_per_s": appends / elapsed,
        "cpu_us_by_thread": {role: cpu / appends * 1e6 for role, cpu in by_role.items()},
        "cpu_us_by_phase": {label: {"us_per_append": cpu / appends * 1e6, "calls_per_append": calls / appends}
                            for label, (cpu, calls) in phase_cpu.items()},
        "load_1m": os.getloadavg()[0],
    }


def sample(clients: int, seconds: float, tasks: int, top: int = 18) -> dict[str, Any] | None:
    """py-spy attached to a child running the loop; the task threads' busiest functions."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(py_spy):
        return None
    child = subprocess.Popen([sys.executable, "-m", "bench.profile_append", "--clients", str(clients), "--seconds",
                              str(seconds + 5), "--tasks", str(tasks), "--json", "--plain"], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    with tempfile.TemporaryDirectory() as directory:
        raw = Path(directory) / "profile.txt"
        time.sleep(3)  # imports, deploy and warm-up
        spy = subprocess.run([py_spy, "record", "--pid", str(child.pid), "--duration", str(int(seconds)), "--rate", "200",
                              "--format", "raw", "--threads", "--output", str(raw)],
                             capture_output=True, text=True)
        child.communicate()
        if spy.returncode != 0 or not raw.exists():
            return {"error": (spy.stderr or "py-spy failed")[-500:]}
        self_samples: collections.Counter[str] = collections.Counter()
        busy = waiting = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if "-task-" not in frames[0] and not any("Task.run_round_here" in f for f in frames):
                continue  # neither a task thread nor a round run on a waiting appender's thread
            names = [f.split(" (")[0] for f in frames[1:]]
            if any(n in WAITS for n in names[-3:]):
                waiting += int(count)
                continue
            if len(frames) < 2:
                continue  # a thread between Python frames
            busy += int(count)
            leaf = frames[-1].replace(str(ROOT) + "/", "")
            leaf = leaf.split("site-packages/")[-1]
            self_samples[leaf] += int(count)
    return {"busy_samples": busy, "waiting_samples": waiting,
            "top": [(frame, n / max(1, busy) * 100) for frame, n in self_samples.most_common(top)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--py-spy", action="store_true", help="also sample the task threads with py-spy")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plain", action="store_true", help="no phase timers (what py-spy samples)")
    args = parser.parse_args()
    result = measure(args.clients, args.seconds, args.tasks, instrument=not args.plain)
    if args.py_spy:
        result["py_spy"] = sample(args.clients, args.seconds, args.tasks)
    if args.json:
        print(json.dumps(result))
        return
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
