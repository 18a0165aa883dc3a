"""Every comparison, one after the other, written to docs/benchmarks.md (what `make bench` runs).

    .venv/bin/python -m bench.suite              # full run, about 15 minutes
    .venv/bin/python -m bench.suite --quick      # shorter runs and smaller data, about 4 minutes
    .venv/bin/python -m bench.suite --only registration,reads

PostgreSQL and Redis are started from their Debian packages in a temporary directory and
stopped at the end, whatever happens (Ctrl-C included). Raw numbers go to
bench/results/latest.json; plots to docs/bench/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import loadavg, machine
from bench.harness import DOCS, PLOTS, Env, Section

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = ["registration", "stack", "reads", "bank", "wordcount", "restart", "wire", "replication", "migration",
             "reactivity", "async", "ingestion", "backup", "mirrors"]


def _workload(name: str) -> Callable[[Env], Section]:
    import importlib

    module = {"registration": "compare_registration", "stack": "compare_stack", "reads": "compare_reads",
              "bank": "compare_bank", "wordcount": "compare_wordcount", "restart": "restart",
              "wire": "wire_framing", "replication": "replication", "migration": "migration",
              "reactivity": "reactivity", "async": "async_handlers", "ingestion": "ingestion",
              "backup": "backup", "mirrors": "mirrors"}[name]
    return importlib.import_module(f"bench.{module}").run


def _arguments(argv: list[str] | None, *, suite: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs and smaller data sets")
    parser.add_argument("--runs", type=int, help="runs per system and concurrency (default 3)")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 3; quick 1)")
    parser.add_argument("--tasks", type=int, default=2, help="headwater tasks per module (default 2: one per core)")
    parser.add_argument("--wait-load", type=float, default=0.0, metavar="S",
                        help="first wait up to S seconds for the 1-minute load average to drop below 1.0")
    if suite:
        parser.add_argument("--only", help=f"comma-separated subset of {','.join(WORKLOADS)}")
        parser.add_argument("--output", default=str(DOCS / "benchmarks.md"))
        parser.add_argument("--no-profile", action="store_true", help="skip the profile of headwater's append path")
        parser.add_argument("--render-only", action="store_true",
                            help="measure nothing: rewrite the page from bench/results/latest.json")
    return parser.parse_args(argv)


def _env(args: argparse.Namespace, root: Path) -> Env:
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 3.0)
    return Env(root=root, runs=args.runs or 3, seconds=seconds, quick=args.quick, tasks=args.tasks, plots=PLOTS)


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def wait_for_quiet(limit_s: float) -> list[float]:
    """Sample the 1-minute load average until it is below 1.0 or `limit_s` passed; the samples."""
    samples = [loadavg()[0]]
    deadline = time.monotonic() + limit_s
    while samples[-1] >= 1.0 and time.monotonic() < deadline:
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))
        samples.append(loadavg()[0])
        print(f"load average {samples[-1]:.2f}", flush=True)
    return samples


def run_profile(args: argparse.Namespace) -> dict[str, Any] | None:
    """bench.profile_append at 1 and 16 clients, and py-spy at 16, each in a child process."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    seconds = "3" if args.quick else "5"
    runs = []
    try:
        # One task: in one process it is the fastest configuration (the task-count table below shows it).
        for clients, spy in ((1, False), (16, True)):
            command = [sys.executable, "-m", "bench.profile_append", "--clients", str(clients), "--seconds", seconds,
                       "--tasks", "1", "--json", *(["--py-spy"] if spy else [])]
            print(f"== profile, {clients} client(s)", flush=True)
            out = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300,
                                 env=os.environ | {"PYTHONPATH": str(root)})
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return None
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    except subprocess.TimeoutExpired:
        return None
    spy = runs[-1].pop("py_spy", None)
    # More tasks should mean more parallelism; under one interpreter lock it does not.
    by_tasks = {}
    for tasks in (1, 2, 4):
        command = [sys.executable, "-m", "bench.profile_append", "--clients", "16", "--seconds", seconds,
                   "--tasks", str(tasks), "--json", "--plain"]
        print(f"== profile, 16 clients, {tasks} task(s)", flush=True)
        out = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300,
                             env=os.environ | {"PYTHONPATH": str(root)})
        if out.returncode == 0:
            by_tasks[tasks] = json.loads(out.stdout.strip().splitlines()[-1])["appends_per_s"]
    return {"runs": runs, "py_spy": spy, "py_spy_clients": 16, "appends_per_s_by_tasks": by_tasks}


def standalone(run: Callable[[Env], Section], argv: list[str] | None = None) -> None:
    """Run one workload on its own and print its section."""
    args = _arguments(argv, suite=False)
    _stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="headwater-bench-") as directory:
        env = _env(args, Path(directory))
        try:
            section = run(env)
        finally:
            env.close()
    print(f"\n## {section.title}\n\n{section.markdown}\n")


def _write(sections: list[Section], failures: list[tuple[str, str]], info: dict[str, Any], args: argparse.Namespace,
           profile: dict[str, Any] | None) -> None:
    from bench.analysis import analysis
    from bench.report import render

    Path(args.output).write_text(render(sections, failures, info, args, profile, analysis(sections, profile)))


def render_only(args: argparse.Namespace) -> None:
    """Rewrite the page from the last run's raw data (after a change to the text, not to the numbers)."""
    from bench.harness import Verdict

    saved = json.loads((RESULTS / "latest.json").read_text())
    sections = []
    for key, data in saved["sections"].items():
        verdicts = [Verdict(**{k: v for k, v in entry.items() if k != "advantage"}) for entry in data["verdicts"]]
        sections.append(Section(key, data["title"], data["markdown"], data, data.get("plots", []), verdicts))
    run_args = argparse.Namespace(**(saved.get("arguments") or {}))
    run_args.output = args.output
    _write(sections, [tuple(f) for f in saved["failures"]], saved["machine"], run_args, saved["profile"])
    print(f"rewrote {args.output} from {RESULTS / 'latest.json'}")


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv, suite=True)
    if args.render_only:
        render_only(args)
        return
    _stop_on_sigterm()
    chosen = WORKLOADS if not args.only else [w.strip() for w in args.only.split(",")]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {WORKLOADS}")
    load_samples = wait_for_quiet(args.wait_load) if args.wait_load else [loadavg()[0]]
    started = time.perf_counter()
    sections: list[Section] = []
    failures: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="headwater-bench-") as directory:
        env = _env(args, Path(directory))
        info = machine(directory)
        try:
            for name in chosen:
                print(f"== {name} (load {loadavg()[0]:.2f})", flush=True)
                section_started = time.perf_counter()
                try:
                    section = _workload(name)(env)
                except KeyboardInterrupt:
                    raise
                except Exception:  # noqa: BLE001 - one broken workload must not hide the others
                    failures.append((name, traceback.format_exc()))
                    print(failures[-1][1], file=sys.stderr, flush=True)
                    continue
                section.data["seconds"] = time.perf_counter() - section_started
                section.data["load_after"] = loadavg()
                section.data["verdicts"] = [v.as_dict() for v in section.verdicts]
                section.data |= {"title": section.title, "markdown": section.markdown, "plots": section.plots}
                sections.append(section)
                print(f"   {name} took {section.data['seconds']:.0f} s", flush=True)
            info["postgres"] = env._postgres.version if env._postgres else None
            info["redis"] = env._redis.version if env._redis else None
        finally:
            env.close()
    profile = None if args.no_profile else run_profile(args)
    info["total_seconds"] = time.perf_counter() - started
    info["load_samples_before"] = load_samples
    info["load_end"] = loadavg()
    info["finished"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    _write(sections, failures, info, args, profile)
    RESULTS.mkdir(exist_ok=True)
    arguments = {k: getattr(args, k) for k in ("quick", "runs", "seconds", "tasks")}
    (RESULTS / "latest.json").write_text(json.dumps(
        {"machine": info, "sections": {s.key: s.data for s in sections}, "failures": failures,
         "quick": args.quick, "profile": profile, "arguments": arguments}, indent=1, default=str))
    print(f"\nwrote {args.output} and {RESULTS / 'latest.json'} in {info['total_seconds']:.0f} s")
    if failures:
        print(f"{len(failures)} workload(s) failed: {[f[0] for f in failures]}", file=sys.stderr)


if __name__ == "__main__":
    main()
