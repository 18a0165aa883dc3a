"""Workload 5 — word count: a headwater microbatch topology against bytewax, on the same sentences.

Reuses `bench/wordcount.py`. The clock runs from the moment processing may start until the last
count is in place: for headwater, from `resume` of the paused topology over sentences already in
its depot until `wait_for_microbatch` sees them all processed (each batch committed with fsync);
for bytewax, `run_main` over the sentences in memory (one worker). bytewax runs twice: in memory
(no recovery, as its docs start) and with recovery on (state snapshotted to SQLite at the end of
every 1-second epoch), the closest it comes to headwater's durable counts. Every run's counts are
checked against the others'.

    .venv/bin/python -m bench.compare_wordcount [--quick]
"""

from __future__ import annotations

import statistics

from bench.harness import Env, Section, Verdict, fmt, ratio, table
from bench.plots import bars
from bench.wordcount import make_sentences, run_bytewax, run_headwater

HEADWATER = "headwater microbatch, durable PState"
BYTEWAX = "bytewax 0.21, in memory"
BYTEWAX_RECOVERY = "bytewax 0.21, recovery on (1 s epochs)"
EPOCH_S = 1.0


def run(env: Env) -> Section:
    sentences = 20_000 if env.quick else 100_000
    lines = make_sentences(sentences, 20_000)
    words = sum(len(line.split()) for line in lines)
    seconds: dict[str, list[float]] = {HEADWATER: [], BYTEWAX: [], BYTEWAX_RECOVERY: []}
    cpu: dict[str, list[float]] = {name: [] for name in seconds}
    samples: dict[str, dict[str, int]] = {}
    for run_index in range(env.runs):
        order = list(seconds) if run_index % 2 == 0 else list(reversed(seconds))
        for system in order:
            stats: dict[str, float] = {}
            if system == HEADWATER:
                result = run_headwater(lines, env.tasks, stats)
            else:
                result = run_bytewax(lines, epoch_s=EPOCH_S if system == BYTEWAX_RECOVERY else None, stats=stats)
                if result is None:
                    raise RuntimeError("bytewax is not installed: pip install -e '.[bench]'")
            cpu[system].append(stats["cpu_s"])
            seconds[system].append(result[0])
            samples[system] = result[1]
            print(f"  w5 run {run_index + 1} {system:<40} {result[0]:6.2f} s  {words / result[0]:10,.0f} words/s",
                  flush=True)
    assert all(s == samples[HEADWATER] for s in samples.values()), samples
    median = {s: statistics.median(v) for s, v in seconds.items()}
    rows = []
    for system, values in seconds.items():
        rows.append([system, fmt(median[system], 2), f"{min(values):.2f}–{max(values):.2f}",
                     f"{words / median[system]:,.0f}", f"{sentences / median[system]:,.0f}",
                     f"{statistics.median(cpu[system]) / words * 1e6:.2f}",
                     "" if system == HEADWATER else ratio(median[system], median[HEADWATER])])
    plot = bars({s: words / m for s, m in median.items()}, env.plots / "wordcount.png",
                f"Word count, {sentences:,} sentences (median of {env.runs} runs)", unit="words/s")
    markdown = "\n\n".join([
        f"{sentences:,} sentences, {words:,} words, a Zipf-like vocabulary of 20,000 words; {env.tasks} headwater "
        "tasks, one bytewax worker. Counts agree across all runs.",
        table(["system", "seconds (median)", "range", "words/s", "sentences/s", "CPU µs per word",
               "headwater ÷ peer: throughput"], rows),
        f"![{plot}](bench/{plot})",
    ])
    verdicts = [Verdict("5. word count", f"words/s against {peer}", words / median[HEADWATER], peer, words / median[peer],
                        unit="words/s") for peer in (BYTEWAX, BYTEWAX_RECOVERY)]
    return Section("wordcount", "5. Word count: microbatch against bytewax", markdown,
                   {"seconds": seconds, "cpu_s": cpu, "words": words, "sentences": sentences}, [plot], verdicts)



def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
