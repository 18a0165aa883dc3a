"""The frame every comparison runs in: settings, lazily started peers, result sections, plots.

Each workload module has `run(env) -> Section`: it measures, and renders its own markdown (it
knows what its numbers mean). `Env` starts PostgreSQL and Redis the first time a workload asks
for them and stops them in `close()`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Measured, loadavg
from bench.peers import Postgres, Redis

__all__ = ["Env", "Section", "ratio", "table", "throughput_table", "fmt"]

DOCS = Path(__file__).resolve().parent.parent / "docs"
PLOTS = DOCS / "bench"


@dataclass
class Env:
    root: Path
    runs: int = 3
    seconds: float = 3.0
    clients: tuple[int, ...] = (1, 4, 16)
    quick: bool = False
    tasks: int = 2
    plots: Path = PLOTS
    _postgres: Postgres | None = None
    _redis: Redis | None = None

    def postgres(self) -> Postgres:
        if self._postgres is None:
            self._postgres = Postgres(self.root)
        return self._postgres

    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis(self.root)
        return self._redis

    def directory(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        for peer in (self._postgres, self._redis):
            if peer is not None:
                with contextlib.suppress(Exception):
                    peer.close()
        self._postgres = self._redis = None


@dataclass
class Section:
    """One workload's results: markdown for docs/benchmarks.md and raw data for bench/results/."""

    key: str
    title: str
    markdown: str
    data: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = field(default_factory=loadavg)


def fmt(x: float, digits: int = 3) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def ratio(a: float, b: float) -> str:
    if not b or a != a or b != b:
        return "n/a"
    return f"{a / b:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_table(measured: list[Measured], reference: str, *, unit: str = "ops/s") -> str:
    """Rows per concurrency and system; each peer row carries headwater ÷ peer at that concurrency."""
    by_clients: dict[int, dict[str, Measured]] = {}
    for m in measured:
        by_clients.setdefault(m.clients, {})[m.system] = m
    rows = []
    for clients in sorted(by_clients):
        systems = by_clients[clients]
        ref = systems.get(reference)
        for name, m in systems.items():
            if ref is None or name == reference:
                ratios = ["", "", ""]
            else:
                ratios = [ratio(ref.ops_per_s, m.ops_per_s), ratio(ref.p50_ms, m.p50_ms), ratio(ref.p99_ms, m.p99_ms)]
            spread = f"{min(r.ops_per_s for r in m.runs):,.0f}–{max(r.ops_per_s for r in m.runs):,.0f}"
            errors = sum(r.errors for r in m.runs)
            rows.append([str(clients), name + (f" ({errors} errors)" if errors else ""), fmt(m.ops_per_s), spread,
                         fmt(m.p50_ms), fmt(m.p99_ms), *ratios])
    return table(["clients", "system", f"{unit} (median)", "range over runs", "p50 ms", "p99 ms",
                  "headwater ÷ peer: throughput", "p50", "p99"], rows)


@contextlib.contextmanager
def timed_section() -> Iterator[dict[str, float]]:
    import time

    info: dict[str, float] = {"load_before": loadavg()[0]}
    started = time.perf_counter()
    yield info
    info["seconds"] = time.perf_counter() - started
    info["load_after"] = loadavg()[0]


def alternate(env: Env, systems: list[str]) -> Iterator[tuple[int, int, str]]:
    """(run, clients, system) in an order that spreads background load evenly over systems."""
    for run in range(env.runs):
        for clients in env.clients:
            order = systems if run % 2 == 0 else list(reversed(systems))
            for system in order:
                yield run, clients, system


def environment_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}"
