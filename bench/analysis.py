"""The page's reading of its own numbers: where headwater is ahead, where it is behind, and why.

Everything quoted comes from the run being written (sections and the profile); the mechanisms
named were found with the profiles this suite takes (bench/profile_append.py) and with py-spy and
cProfile runs described in the text, which anyone can repeat.
"""

from __future__ import annotations

from typing import Any

from bench.harness import Section, fmt

__all__ = ["analysis"]


def _measured(section: Section | None, system_prefix: str, clients: int) -> dict[str, Any] | None:
    if section is None:
        return None
    for m in section.data.get("measured", []):
        if m["system"].startswith(system_prefix) and m["clients"] == clients:
            return m
    return None


def _cores(m: dict[str, Any]) -> float:
    """CPU cores kept busy: operations per second × CPU seconds per operation."""
    return m["ops_per_s"] * m["cpu_us_per_op"] / 1e6


def _overall(sections: list[Section]) -> str:
    verdicts = [v for s in sections for v in s.verdicts if v.advantage == v.advantage]
    behind = sorted({v.workload for v in verdicts if v.advantage < 1.0})
    short = sorted({v.workload for v in verdicts if 1.0 <= v.advantage < v.goal})
    ahead = sorted({v.workload for v in verdicts if v.advantage >= v.goal} - set(behind) - set(short))
    lines = [f"headwater is ahead on every measure of: {', '.join(ahead) or 'none'}."]
    if behind:
        lines.append(f"It is behind on at least one measure of: {', '.join(behind)}.")
    if short:
        lines.append(f"It is ahead but short of its goal on: {', '.join(short)}.")
    return " ".join(lines)


def _registration(section: Section | None, profile: dict[str, Any] | None) -> str:
    if section is None:
        return ""
    clients = max(m["clients"] for m in section.data["measured"])
    hw = _measured(section, "headwater full-ack append (in process)", clients)
    one_task = _measured(section, "headwater full-ack append, 1 task", clients)
    pgs = [m for m in section.data["measured"] if m["system"].startswith("PostgreSQL") and m["clients"] == clients]
    hw1, pg1 = _measured(section, "headwater full-ack append (in process)", 1), _measured(section, "PostgreSQL one", 1)
    if hw is None or not pgs:
        return ""
    pg = max(pgs, key=lambda m: m["ops_per_s"])
    two_tasks = hw
    if one_task is not None and one_task["ops_per_s"] > hw["ops_per_s"]:
        hw = one_task  # the faster configuration speaks for headwater
    ratio = hw["ops_per_s"] / pg["ops_per_s"]
    title = ("why headwater is behind" if ratio < 1 else
             "why headwater is not further ahead" if ratio < 2 else "where headwater's lead comes from")
    text = [
        f"### Registration against PostgreSQL: {title}",
        f"**It is one Python process, and Python runs one thread at a time.** At {clients} clients headwater "
        f"did {fmt(hw['ops_per_s'])} sign-ups/s spending {fmt(hw['cpu_us_per_op'])} µs of CPU on each: "
        f"{_cores(hw):.2f} of the machine's cores. PostgreSQL (the one-statement variant) did "
        f"{fmt(pg['ops_per_s'])}/s at {fmt(pg['cpu_us_per_op'])} µs each ({fmt(pg['server_cpu_us_per_op'])} µs in its "
        f"server processes): {_cores(pg):.2f} cores. "
        + ("headwater does not spend more CPU per sign-up than PostgreSQL does; it cannot spend it on two cores "
           "at once. " if hw["cpu_us_per_op"] <= pg["cpu_us_per_op"] else
           "headwater spends more CPU per sign-up, and cannot spend it on two cores at once. ")
        + "Every task, every client thread and the "
        "handler run under one interpreter lock, while PostgreSQL runs one backend process per connection, "
        "in C. The fsync is not the limit either: group commit shares each sync among all the appends a task "
        "drained, and the task thread releases the lock while the disk syncs.",
    ]
    if one_task is not None:
        gain = two_tasks["ops_per_s"] / one_task["ops_per_s"] - 1
        headline = ("More tasks do not help; fewer do." if gain < -0.05 else
                    "More tasks do not help." if gain < 0.10 else f"A second task helps by only {gain:.0%}.")
        text.append(
            f"**{headline}** With one task, headwater did {fmt(one_task['ops_per_s'])} sign-ups/s at {clients} clients "
            f"({fmt(one_task['cpu_us_per_op'])} µs of CPU each); with two, {fmt(two_tasks['ops_per_s'])}/s. Under one "
            "interpreter lock a second task thread adds no parallelism: the tasks take turns, and each task, back "
            "from its WAL sync, waits for the lock while the other task computes.")
    runs = {r["clients"]: r for r in (profile or {}).get("runs", [])}
    many = runs.get(16) or (max(runs.values(), key=lambda r: r["clients"]) if runs else None)
    few = None
    if many:
        threads, phases = many["cpu_us_by_thread"], many["cpu_us_by_phase"]
        python = sum(us for role, us in threads.items() if "fsync" not in role)
        invoke = phases.get("Task.invoke", {}).get("us_per_append", float("nan"))
        task = _round_cpu(many)
        rounds = phases.get("Task._end_round", {}).get("calls_per_append")
        per_sync = f" Each round (one sync) carried {1 / rounds:.1f} appends." if rounds else ""
        client = python - task
        text.append(
            f"**Where the CPU goes** (profile below, {many['clients']} clients): {fmt(task)} µs per append in the "
            f"task's rounds (on the task thread or a waiting appender's), of which {fmt(invoke)} µs is the handler "
            "itself — `register`'s three PState operations "
            "(`exists`, `set`, `increment`) through `View` → `PStateExecutor` → layout → `Txn`, each with a "
            "storage read, key and value encoding and, for a new element, its parent's count — and the rest the engine's "
            f"per-record bookkeeping (group commit, the WAL sync's system calls, trees, progress, the round's batch, "
            f"replies); {fmt(client)} µs outside the rounds (validate and encode the event, wait, wake). About "
            f"{fmt(python)} µs of CPU per sign-up outside the fsync, nearly all of it Python holding the interpreter lock, "
            "caps the process near "
            f"{fmt(1e6 / python)} sign-ups/s however many cores the machine has. The sampling profile has no "
            "single hot spot: the cost is spread over dozens of small Python calls per event." + per_sync
            + _wakeups(profile))
    few = runs.get(1)
    if hw1 and pg1 and few and many:
        def outside_handler(run: dict[str, Any]) -> float:
            return _round_cpu(run) - run["cpu_us_by_phase"].get("Task.invoke", {}).get("us_per_append", 0.0)

        text.append(
            f"**One client:** headwater's p50 is {fmt(hw1['p50_ms'])} ms against PostgreSQL's {fmt(pg1['p50_ms'])} ms, "
            f"and each append costs {fmt(sum(few['cpu_us_by_thread'].values()))} µs of CPU — more than at "
            f"{many['clients']} clients ({fmt(sum(many['cpu_us_by_thread'].values()))} µs), because a lone append "
            "pays a whole round by itself: the rounds spend "
            f"{fmt(outside_handler(few))} µs per append outside the handler at one client against "
            f"{fmt(outside_handler(many))} µs at {many['clients']} (two RocksDB write batches per round — the appends, "
            "then the PState writes and progress — the WAL sync's system calls, the tree and the reply). The appender "
            "runs that round on its own thread when no round is running, instead of waking the task thread and "
            "being woken by it. A full ack at one client is one fsync (see the machine table) plus that one round "
            "of Python.")
    hw4 = max((m for m in (_measured(section, "headwater full-ack append (in process)", 4),
                           _measured(section, "headwater full-ack append, 1 task", 4)) if m),
              key=lambda m: m["ops_per_s"], default=None)
    pg4 = _measured(section, "PostgreSQL one", 4)
    if hw4 and pg4 and hw4["ops_per_s"] < pg4["ops_per_s"]:
        text.append(
            f"**Four clients** is where headwater is furthest behind: {fmt(hw4['ops_per_s'])} against "
            f"{fmt(pg4['ops_per_s'])} sign-ups/s. With four appenders a round carries about two appends (measured: 2.0), and a "
            "task's rounds run one after another: while one round's fsync waits for the disk, the appends that "
            "arrive wait for it to end. PostgreSQL's four backends execute their statements at the same time, on "
            "both cores, and share fsyncs. Two ways of overlapping were measured and dropped (see below).")
    txn = _measured(section, "PostgreSQL transaction", clients)
    overtakes = txn is not None and hw["ops_per_s"] > txn["ops_per_s"]
    text.append(
        "**PostgreSQL's own limit** here is the day's counter: one row that every sign-up updates and keeps locked "
        "until its commit is synced, so its throughput flattens as clients are added. headwater keeps a counter "
        "per task (the example's design) and has no such row"
        + (f"; that is how it overtakes the transaction-with-SELECT variant at {clients} clients "
           f"({fmt(hw['ops_per_s'])} against {fmt(txn['ops_per_s'])}/s)." if overtakes else ".")
        + (f" The queue on that row also gives PostgreSQL its long tail: at {clients} clients its p99 is "
           f"{fmt(pg['p99_ms'])} ms against headwater's {fmt(hw['p99_ms'])} ms, though its median is far lower "
           "(see the latency plot)." if pg["p99_ms"] > hw["p99_ms"] else ""))
    return "\n\n".join(text)


def _round_cpu(run: dict[str, Any]) -> float:
    """CPU per append in the task's rounds, whichever thread ran them (the task thread's if the
    profile predates rounds run by appenders)."""
    rounds = run["cpu_us_by_phase"].get("Task._run_round")
    if rounds:
        return rounds["us_per_append"]
    return sum(us for role, us in run["cpu_us_by_thread"].items() if role.startswith("task"))


def _wakeups(profile: dict[str, Any] | None) -> str:
    spy = (profile or {}).get("py_spy") or {}
    share = sum(pct for frame, pct in spy.get("top", []) if frame.startswith("_Signal.set"))
    if share < 5:
        return ""
    return (f" The largest single item in the sampling profile is `_Signal.set` ({share:.0f}% of the rounds' "
            "computing samples): the lock release that wakes each waiting client thread, one futex wake-up per "
            "reply (py-spy counts a thread inside that system call as busy).")


def _http(section: Section | None) -> str:
    if section is None or section.data.get("http_note"):
        return ""
    http, local = _measured(section, "headwater over HTTP", 1), _measured(section, "headwater in process", 1)
    pg, rd = _measured(section, "PostgreSQL", 1), _measured(section, "Redis", 1)
    if not (http and local and pg and rd):
        return ""
    client = http["cpu_us_per_op"] - http["server_cpu_us_per_op"]
    return "\n\n".join([
        "### Reads over HTTP: why headwater is behind",
        f"The read itself is cheap — {fmt(local['cpu_us_per_op'])} µs of CPU in process, {fmt(local['p50_ms'] * 1000)} µs "
        f"p50 — but over HTTP one read costs {fmt(http['cpu_us_per_op'])} µs of CPU: {fmt(client)} µs in the client "
        f"and {fmt(http['server_cpu_us_per_op'])} µs in the server, against {fmt(pg['cpu_us_per_op'])} µs "
        f"({fmt(pg['server_cpu_us_per_op'])} in the server) for PostgreSQL and {fmt(rd['cpu_us_per_op'])} µs "
        f"({fmt(rd['server_cpu_us_per_op'])}) for Redis, both speaking compact binary protocols through C "
        "drivers. Both HTTP ends are the cost:",
        "- **client:** `hw.connect` speaks HTTP/1.1 over keep-alive sockets with a small client of its own "
        "(`headwater/client/connections.py`: one write per request), which took about 100–200 µs of CPU per "
        "request where httpx, which it replaced, took 600–1,000 µs; the C drivers of PostgreSQL and Redis take "
        "less still;\n"
        "- **server:** uvicorn on httptools and uvloop; a point read is answered in the HTTP parser's callback, "
        "with no ASGI scope, request cycle or asyncio task, and each answer leaves in one write. What remains is "
        "Python: finding the route, building the view, encoding the key, the RocksDB read and the JSON answer, "
        "about 100 µs of CPU above what a bare uvloop protocol answering a fixed response costs on this machine "
        "(≈60 µs); Redis answers in C in a few tens of µs. The client process and the server process share the "
        "machine's two cores.",
    ])


def _wordcount(section: Section | None) -> str:
    if section is None:
        return ""
    verdicts = [v for v in section.verdicts if v.advantage == v.advantage]
    cpu = section.data.get("cpu_s", {})
    words = section.data.get("words", 1)
    if not verdicts or not cpu:
        return ""
    behind = [v for v in verdicts if v.advantage < 1.0]
    import statistics

    per_word = {name: statistics.median(values) / words * 1e6 for name, values in cpu.items() if values}
    numbers = "; ".join(f"{name}: {us:.2f} µs" for name, us in per_word.items())
    if not behind:
        return "\n\n".join(["### Word count", f"CPU per word — {numbers}. headwater's batches run the handler once "
                             "per partition and batch (`per_batch=True`) and commit once per batch, so per word it "
                             "spends less CPU than bytewax's per-item Python callbacks, and it keeps its counts "
                             "durable."])
    return "\n\n".join([
        "### Word count: why headwater is behind",
        f"CPU per word — {numbers}. bytewax runs its dataflow in Rust and calls Python only for the split and "
        "the key function; headwater runs each batch in Python on both tasks and then makes it durable. In a "
        "cProfile of the task threads (100,000 sentences) the time is in `add_counts`: one "
        "`view[word].increment(n)` per distinct word and task per batch, each going through "
        "`Context.write` → `_check_owner` (the stable hash again) → path walk → `Txn.get` (a RocksDB read of the "
        "old count) → `encode_key`/`encode_value`: tens of µs per increment, and a 20,000-word vocabulary makes "
        "that tens of thousands of increments per batch. Committing is not the cost: a batch takes up to 10,000 "
        "records per partition and commits once.",
    ])


def _restart(section: Section | None) -> str:
    if section is None:
        return ""
    behind = [v for v in section.verdicts if v.advantage == v.advantage and v.advantage < 1.0]
    if not behind:
        return ""
    hw = section.data["headwater"]
    events = section.data["events"]
    lines = ["### Restart, disk and memory: where headwater is behind"]
    for v in behind:
        lines.append(
            f"- {v.measure}: headwater {v.headwater:,.0f} against {v.peer} {v.peer_value:,.0f} "
            f"({v.advantage:.2f}×). headwater keeps both the event log and the state it derived (the `users` PState "
            "and the counters) on disk, compressed by RocksDB (ZSTD); Redis's append-only file holds only the commands, "
            f"and Redis pays for that in memory: it must load the whole data set before it answers (it did after "
            f"{section.data['redis']['serving_s']:.2f} s at {events:,} hashes, headwater after "
            f"{hw['reopen']['serving_s']:.3f} s) and holds it all in RAM.")
    return "\n\n".join(lines)


FIXES = """\
### What would put headwater further ahead (engine changes not made yet)

1. **Use more than one core.** Run each task's loop in its own process (a multiprocessing transport behind
   the existing `Transport` seam, the same one the Ray cluster will use), or support free-threaded CPython
   3.13t. Every task, client thread and handler of one process takes turns on one interpreter lock: the
   second core mostly waits, and a second task in the same process makes things slower, not faster.
2. **Make a handler's PState operation cheaper still.** Done: a task builds each PState's view once, a view's
   operations walk and hash its key once, an integer `increment` no longer decodes a path, and an
   invocation's writes merge into the round without sorting. Still open: validate a path once at the view
   instead of again at the layout, and give `increment` a blind write (a RocksDB merge operator) instead of
   read-modify-write.
3. **Cut the per-round cost.** Done: the WAL is synced once per round on the task thread (the separate sync
   thread needed the interpreter lock to start and to finish each sync and got it late, so its overlap never
   happened), and a full-ack appender runs the round on its own thread when none is running (flat
   combining: no wake-up of the task thread and back; one client ~1,400 → ~1,800 sign-ups/s). Tried and
   measured worse: letting the next round compute while the previous round's fsync waits (pipelined group
   commit: rounds got smaller and fsyncs more frequent; four clients 2,350–2,650 → 1,800–2,450/s), and
   letting appenders that find a round running wait for it and then run the next round themselves (16
   clients 4,700 → 1,700/s, for the same reason). Still open: one RocksDB write per round instead of two
   (appends, then the PState writes), and no tree bookkeeping for records whose handler spawned nothing.
4. **A cheaper fsync.** On this disk, `fdatasync` of a write that grows the WAL file took 0.26–0.29 ms
   (p50) and of a write over an existing file 0.15–0.21 ms: growing a file also commits the file system's
   journal. PostgreSQL writes into recycled, already-allocated WAL segments. RocksDB can recycle WAL files
   (`recycle_log_file_num`), but only once a memtable flush has made one obsolete, and the recycled files
   (tens of MB per task) stay on disk; it is not enabled.
5. **HTTP.** Done: a lean keep-alive client, hot routes before the middleware, point reads answered from the
   HTTP parser's callback, one write per answer. Still open: more than one server process (`SO_REUSEPORT`)
   so that HTTP uses every core, and a `get-many` endpoint."""


def analysis(sections: list[Section], profile: dict[str, Any] | None) -> str:
    by_key = {s.key: s for s in sections}
    parts = ["## Reading the numbers", _overall(sections)]
    parts += [p for p in (_registration(by_key.get("registration"), profile), _http(by_key.get("reads")),
                          _wordcount(by_key.get("wordcount")), _restart(by_key.get("restart"))) if p]
    parts.append(FIXES)
    return "\n\n".join(parts)
