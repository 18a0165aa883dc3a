"""Benchmark: word count as a microbatch topology, side by side with bytewax on the same input.

headwater keeps the counts in a durable `hw.Map(str, int)` PState (RocksDB, each batch committed
with fsync); bytewax keeps them in memory (no recovery store configured). Both read the same
sentences and must produce the same counts; the script checks that before printing.

    make bench                    # or: .venv/bin/python bench/wordcount.py --sentences 200000
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import headwater as hw  # noqa: E402

wordcount = hw.Module("wordcount")
sentences = wordcount.depot("sentences", str)
counts = wordcount.pstate("counts", hw.Map(str, int))


@wordcount.microbatch(sentences, per_batch=True)
def count_words(ctx: hw.Context, batch: list[str]) -> None:
    # Count the batch locally, then send each task one hop with the words it owns.
    local = Counter(word for sentence in batch for word in sentence.split())
    by_task: dict[int, dict[str, int]] = defaultdict(dict)
    for word, n in local.items():
        by_task[ctx.task_for(word)][word] = n
    for task, part in by_task.items():
        ctx.hop_task(task, add_counts, part)


@wordcount.step
def add_counts(ctx: hw.Context, part: dict[str, int]) -> None:
    view = ctx.pstate(counts)
    for word, n in part.items():
        view[word].increment(n)


def make_sentences(count: int, vocabulary: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary)]
    weights = [1 / (i + 1) for i in range(vocabulary)]  # Zipf-like, as in real text
    return [" ".join(rng.choices(words, weights, k=rng.randint(5, 15))) for _ in range(count)]


def run_headwater(lines: list[str], tasks: int, stats: dict[str, float] | None = None) -> tuple[float, dict[str, int]]:
    """Seconds from resuming the topology over the stored sentences until all are counted, and a few
    words' counts; `stats["cpu_s"]` gets the CPU the process spent in that window."""
    with tempfile.TemporaryDirectory(prefix="headwater-wc-") as directory, hw.InProcessCluster(directory) as cluster:
        cluster.deploy(wordcount, tasks=tasks)
        depot = cluster.depot("wordcount", "sentences")
        cluster.pause("wordcount", "count_words")
        for start in range(0, len(lines), 5000):
            depot.append_many(lines[start:start + 5000], ack="append")
        started, cpu = time.perf_counter(), time.process_time()
        cluster.resume("wordcount", "count_words")
        cluster.wait_for_microbatch("wordcount", "count_words", processed=len(lines), timeout=600)
        elapsed = time.perf_counter() - started
        if stats is not None:
            stats["cpu_s"] = time.process_time() - cpu
        view = cluster.pstate("wordcount", "counts")
        sample = {w: view[w].get() for w in ("w0", "w1", "w10", "w100")}
    return elapsed, sample


BYTEWAX_FLOW = '''
import sys, time, json
from datetime import timedelta
from pathlib import Path
from bytewax.dataflow import Dataflow
import bytewax.operators as op
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

lines = open(sys.argv[1]).read().splitlines()
final = {}

flow = Dataflow("wordcount")
stream = op.input("in", flow, TestingSource(lines, batch_size=1000))
words = op.flat_map("split", stream, lambda line: line.split())
counted = op.count_final("count", words, lambda w: w)
op.inspect("collect", counted, lambda step, kv: final.__setitem__(kv[0], kv[1]))
options = {}
if len(sys.argv) > 2:  # recovery on: state snapshots in SQLite at the end of every epoch
    init_db_dir(Path(sys.argv[2]), 1)
    options = {"recovery_config": RecoveryConfig(Path(sys.argv[2])), "epoch_interval": timedelta(seconds=float(sys.argv[3]))}
started, cpu = time.perf_counter(), time.process_time()
run_main(flow, **options)
elapsed = time.perf_counter() - started
print(json.dumps({"elapsed": elapsed, "cpu_s": time.process_time() - cpu, "sample": {w: final.get(w) for w in ("w0", "w1", "w10", "w100")}}))
'''


def run_bytewax(lines: list[str], *, epoch_s: float | None = None,
                stats: dict[str, float] | None = None) -> tuple[float, dict[str, int]] | None:
    """Seconds bytewax took and its counts of a few words; with `epoch_s`, recovery is on and its
    state is snapshotted to SQLite at the end of every epoch of that length."""
    try:
        import bytewax  # noqa: F401
    except ImportError:
        return None
    import json

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "lines.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        script = os.path.join(directory, "flow.py")
        with open(script, "w") as f:
            f.write(BYTEWAX_FLOW)
        recovery = [os.path.join(directory, "recovery"), str(epoch_s)] if epoch_s is not None else []
        if recovery:
            os.mkdir(recovery[0])
        out = subprocess.run([sys.executable, script, path, *recovery], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if stats is not None:
        stats["cpu_s"] = result["cpu_s"]
    return result["elapsed"], result["sample"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=2)
    args = parser.parse_args()
    lines = make_sentences(args.sentences, args.vocabulary)
    total_words = sum(len(line.split()) for line in lines)
    hw_elapsed, hw_sample = run_headwater(lines, args.tasks)
    bytewax = run_bytewax(lines)
    print(f"\nword count — {args.sentences:,} sentences, {total_words:,} words, vocabulary {args.vocabulary:,}, "
          f"{os.cpu_count()} cores\n")
    print(f"| {'system':<44} | {'seconds':>8} | {'words/s':>12} | {'sentences/s':>12} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 14}|{'-' * 14}|")
    rows = [(f"headwater microbatch, {args.tasks} tasks, durable", hw_elapsed)]
    if bytewax is not None:
        rows.append(("bytewax 1 worker, in memory (count_final)", bytewax[0]))
        if bytewax[1] != hw_sample:
            print(f"counts differ! headwater {hw_sample} bytewax {bytewax[1]}")
    for name, elapsed in rows:
        print(f"| {name:<44} | {elapsed:8.2f} | {total_words / elapsed:12,.0f} | {args.sentences / elapsed:12,.0f} |")
    if bytewax is None:
        print("(bytewax is not installed: `pip install -e '.[bench]'` to compare)")


if __name__ == "__main__":
    main()
