"""docs/benchmarks.md from the sections the suite measured: summary, machine, method, tables, profile."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from bench.harness import Section, Verdict, fmt, table

__all__ = ["render"]


def _value(v: Verdict, x: float) -> str:
    if v.unit == "B":
        return f"{x / 2**20:,.1f} MiB" if x > 10 * 2**20 else f"{x:,.0f} B"
    if v.unit in ("ms", "s"):
        return f"{fmt(x)} {v.unit}"
    return f"{fmt(x)} {v.unit}"


def summary(sections: list[Section]) -> str:
    rows = []
    for section in sections:
        for v in section.verdicts:
            advantage = v.advantage
            if advantage != advantage:
                mark = "n/a"
            elif advantage >= v.goal:
                mark = "**ahead**" if v.goal == 1.0 else f"**ahead, goal {v.goal:g}× met**"
            elif advantage >= 1.0:
                mark = f"ahead, goal {v.goal:g}× missed"
            else:
                mark = "behind"
            rows.append([v.workload, v.measure, _value(v, v.headwater), v.peer, _value(v, v.peer_value),
                         f"{advantage:.2f}×" if advantage == advantage else "n/a", mark])
    return table(["workload", "measure", "headwater", "best peer", "peer", "headwater's advantage", "verdict"], rows)


def machine_table(info: dict[str, Any], args: argparse.Namespace) -> str:
    fsync = info["fsync"]
    load = info.get("load_samples_before", [])
    rows = [
        ["CPU", f"{info['cores']} cores, {info['cpu']}"],
        ["memory", f"{info['memory_gib']} GiB"],
        ["disk (temporary directory)", f"{info['disk']}; write 4 KiB + fdatasync p50 {fsync['p50_ms']:.3f} ms, "
                                       f"p99 {fsync['p99_ms']:.3f} ms (measured by the script)"],
        ["kernel / Python", f"{info['kernel']} / {info['python']}"],
        ["peers", f"{info.get('postgres') or 'not started'}; {info.get('redis') or 'not started'}"],
        ["headwater", f"commit {info['commit']}{' with uncommitted changes under headwater/' if info['dirty'] else ''}"],
        ["load average (1 min) before", ", ".join(f"{x:.2f}" for x in load) +
         (" — not below 1.0: other work shared the CPU" if load and load[-1] >= 1.0 else "")],
        ["load average at the end", " / ".join(f"{x:.2f}" for x in info["load_end"]) +
         " (1, 5, 15 min; while it runs, the benchmark's own threads and servers count in it too)"],
        ["run", f"{'quick' if args.quick else 'full'}; {args.runs or 3} runs per measurement of "
                f"{args.seconds or (1.0 if args.quick else 3.0):g} s; headwater with {args.tasks} tasks; "
                f"{info['total_seconds'] / 60:.1f} minutes in all"],
    ]
    return table(["", ""], rows)


METHOD = """\
- **Same machine, same run, same durability.** PostgreSQL and Redis are the Debian packages,
  started by the benchmark in a temporary directory on loopback and stopped at the end.
  PostgreSQL runs with `fsync=on`, `synchronous_commit=on`, `full_page_writes=on` (plus
  `shared_buffers=1GB` and `max_wal_size=8GB` so that no checkpoint lands in a measured run);
  Redis with `appendonly yes`, `appendfsync always`. A headwater append is acknowledged after its
  record is synced to disk (group commit); so is every PostgreSQL commit and every Redis write.
  SQLite (workload 4) runs in WAL mode with `synchronous=FULL`. The exceptions are said in their
  rows (bytewax in memory).
- **Closed loop.** Each client is a thread that issues its next operation when the previous one
  returns; latency is measured around each call, throughput counts the operations of the measured
  window (after a 0.3 s warm-up). Every client of a peer has its own connection (psycopg 3 with
  prepared statements, redis-py with hiredis), over TCP on 127.0.0.1. All client threads live in the
  one benchmark process, so at 16 clients a peer's throughput is also bounded by that process's
  interpreter lock; its client-side CPU is the CPU column minus the part in parentheses.
- **Runs alternate.** Each measurement is repeated (3 runs in a full run), alternating systems
  in every round so that background load falls on all of them alike; tables show the median of
  the runs' throughputs and of their p50/p99 latencies, and the range of throughputs.
- **CPU per operation** is the CPU time this benchmark process (all its threads) and the peer's
  server processes spent in the measured window, divided by the operations; the part spent in the
  servers is in parentheses. For headwater in process everything is in the benchmark process.
- **Ratios** are always *headwater ÷ peer* at the same concurrency, from the same run:
  throughput above 1× and latency below 1× favour headwater. "headwater's advantage" in the
  summary is oriented so that above 1× always means headwater is better.
"""


def profile_section(profile: dict[str, Any] | None) -> str:
    if not profile:
        return "The profile step did not run."
    parts = []
    for result in profile.get("runs", []):
        threads = result["cpu_us_by_thread"]
        phases = result["cpu_us_by_phase"]
        total = sum(threads.values())
        rows = [[role, f"{us:,.0f}"] for role, us in sorted(threads.items(), key=lambda x: -x[1]) if us >= 0.5]
        rows.append(["**all threads**", f"**{total:,.0f}**"])
        parts.append(f"**{result['clients']} client{'s' if result['clients'] > 1 else ''}, {result['tasks']} "
                     f"task{'s' if result['tasks'] > 1 else ''}** — "
                     f"{result['appends_per_s']:,.0f} appends/s while instrumented (load {result['load_1m']:.2f}). "
                     "CPU per append by thread:\n\n" + table(["threads", "CPU µs per append"], rows))
        order = ["Task._drain", "Task._handle", "Task._persist", "RocksStore.write", "Task._pump", "Task._run_root",
                 "Task.invoke", "Task._commit", "Task._end_round", "RocksStore.sync"]
        explain = {
            "Task._drain": "take messages from the inbox",
            "Task._handle": "handle the drained messages (appends are persisted here)",
            "Task._persist": "group commit: encode and write the drained appends",
            "RocksStore.write": "RocksDB write batches (appends and round commits)",
            "Task._pump": "run stream topologies over the new records",
            "Task._run_root": "one record's root invocation, bookkeeping included",
            "Task.invoke": "**the handler** (`register`: exists, set, increment) over a Txn",
            "Task._commit": "merge the invocation's writes into the round",
            "Task._end_round": "commit the round, wait for the WAL sync, send replies",
            "RocksStore.sync": "the WAL fsync (on the task thread, lock released)",
        }
        rows = [[f"`{name}`", explain.get(name, ""), f"{phases[name]['us_per_append']:,.0f}",
                 f"{phases[name]['calls_per_append']:.2f}"] for name in order if name in phases]
        parts.append("CPU per append by phase (nested: `_handle` includes `_persist`, `_pump` includes "
                     "`_run_root`, which includes `invoke`):\n\n" +
                     table(["phase", "what", "CPU µs per append", "calls per append"], rows))
    by_tasks = profile.get("appends_per_s_by_tasks")
    if by_tasks:
        rows = [[str(tasks), f"{rate:,.0f}"] for tasks, rate in sorted(by_tasks.items(), key=lambda x: int(x[0]))]
        parts.append("Full-ack appends/s at 16 clients by task count (no instrumentation): more tasks are more "
                     "threads taking turns on one interpreter lock, not more parallelism.\n\n" +
                     table(["tasks", "appends/s"], rows))
    spy = profile.get("py_spy")
    if spy and "top" in spy:
        busy, waiting = spy["busy_samples"], spy["waiting_samples"]
        rows = [[f"`{frame}`", f"{share:.1f}%"] for frame, share in spy["top"]]
        parts.append(f"py-spy on the task's rounds, on the task threads and inside appenders' `run_round_here` "
                     f"({profile['py_spy_clients']} clients; {busy:,} samples computing, "
                     f"{waiting:,} blocked on a lock, queue or fsync, left out): where the computing samples are, "
                     "innermost Python frame:\n\n" + table(["function (file:line)", "share of computing samples"], rows))
    elif spy:
        parts.append(f"py-spy could not sample: {spy.get('error', 'unknown error')}")
    return "\n\n".join(parts)


def render(sections: list[Section], failures: list[tuple[str, str]], info: dict[str, Any],
           args: argparse.Namespace, profile: dict[str, Any] | None = None, analysis: str = "") -> str:
    when = info.get("finished") or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "make bench" if not args.quick else "make bench BENCH_ARGS=--quick"
    out = [
        "# Benchmarks: headwater against the systems people would use instead",
        f"Generated by `{command}` (`python -m bench.suite`) on {when}. Every number on this page comes from that one "
        "run; the raw data is in `bench/results/latest.json` (not committed). The claim under test is the seed "
        "essay's: that integrating log, compute and storage in one process makes *\"the combined operation as good "
        "or better than direct database writes\"* — and the goal set for headwater: at least 2× PostgreSQL's "
        "throughput on the registration workload at equal durability, and ahead of every peer everywhere.",
        "## Summary",
        summary(sections),
    ]
    if analysis:
        out += [analysis]
    out += ["## Machine", machine_table(info, args), "## Method", METHOD]
    for section in sections:
        out += [f"## {section.title}", section.markdown]
    out += ["## Where headwater's append time goes", profile_section(profile)]
    if failures:
        out += ["## Workloads that failed in this run"]
        out += [f"### {name}\n\n```\n{trace.strip()[-3000:]}\n```" for name, trace in failures]
    out += ["## Reproducing", REPRODUCE]
    return "\n\n".join(out).rstrip() + "\n"


REPRODUCE = """\
```sh
make bench                          # everything (installs .[bench], PostgreSQL and Redis if missing), ~15 min
make bench BENCH_ARGS=--quick       # shorter runs and smaller data, a few minutes
.venv/bin/python -m bench.suite --only registration,reads --runs 5
.venv/bin/python -m bench.compare_registration      # one workload, printed instead of written
.venv/bin/python -m bench.profile_append --clients 16 --py-spy
.venv/bin/python -m bench.backup --quick             # backups: a full one, an incremental one, a restore
```

Run the `bench.*` modules with `-m` from the repository root. The suite waits up to `--wait-load S`
seconds for the 1-minute load average to fall below 1.0 before it starts (`make bench
BENCH_ARGS="--wait-load 600"`); `--render-only` rewrites this page from `bench/results/latest.json`
without measuring again."""
