"""The frame every comparison runs in: settings, lazily started peers, result sections, plots.

Each workload module has `run(env) -> Section`: it measures, and renders its own markdown (it
knows what its numbers mean). `Env` starts PostgreSQL and Redis the first time a workload asks
for them and stops them in `close()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Measured, loadavg
from bench.peers import Postgres, Redis

__all__ = ["Env", "Section", "Verdict", "best_peer_verdicts", "fmt", "ratio", "table", "throughput_table"]

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
    verdicts: list["Verdict"] = field(default_factory=list)
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
            cpu = "n/a" if m.cpu_us_per_op != m.cpu_us_per_op else (
                f"{m.cpu_us_per_op:,.0f}" + (f" ({m.server_cpu_us_per_op:,.0f})" if m.server_cpu_us_per_op else ""))
            rows.append([str(clients), name + (f" ({errors} errors)" if errors else ""), fmt(m.ops_per_s), spread,
                         fmt(m.p50_ms), fmt(m.p99_ms), cpu, *ratios])
    return table(["clients", "system", f"{unit} (median)", "range over runs", "p50 ms", "p99 ms",
                  "CPU µs/op (in servers)", "headwater ÷ peer: throughput", "p50", "p99"], rows)


def alternate(env: Env, systems: list[str]) -> Iterator[tuple[int, int, str]]:
    """(run, clients, system) in an order that spreads background load evenly over systems."""
    for run in range(env.runs):
        for clients in env.clients:
            order = systems if run % 2 == 0 else list(reversed(systems))
            for system in order:
                yield run, clients, system


@dataclass
class Verdict:
    """One line of the summary: headwater against the best peer on one measure."""

    workload: str
    measure: str
    headwater: float
    peer: str
    peer_value: float
    higher_is_better: bool = True
    unit: str = ""
    goal: float = 1.0  # headwater must beat the peer by this factor

    @property
    def advantage(self) -> float:
        """How many times better headwater is (>1: ahead), whichever direction is better."""
        if not self.headwater or not self.peer_value:
            return float("nan")
        return self.headwater / self.peer_value if self.higher_is_better else self.peer_value / self.headwater

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "advantage": self.advantage}


def best_peer_verdicts(workload: str, measured: list[Measured], reference: str | list[str], peers: list[str], *,
                       unit: str, goal: float = 1.0, latency: bool = True,
                       labels: dict[str, str] | None = None) -> list[Verdict]:
    """Per client count: headwater's best throughput (and p50) against the best peer's.

    `reference` may name several headwater configurations; the best of them is compared, as the
    best of the peers is, and named in the measure when there is a choice.
    """
    out = []
    references = [reference] if isinstance(reference, str) else reference
    by = {(m.system, m.clients): m for m in measured}
    for clients in sorted({m.clients for m in measured}):
        mine = [by[(r, clients)] for r in references if (r, clients) in by]
        candidates = [by[(p, clients)] for p in peers if (p, clients) in by]
        if not mine or not candidates:
            continue
        label = f"{clients} client{'s' if clients > 1 else ''}"
        ref, best = max(mine, key=lambda m: m.ops_per_s), max(candidates, key=lambda m: m.ops_per_s)
        which = f" ({(labels or {}).get(ref.system, ref.system)})" if len(mine) > 1 else ""
        out.append(Verdict(workload, f"throughput, {label}{which}", ref.ops_per_s, best.system, best.ops_per_s,
                           unit=unit, goal=goal))
        if latency:
            ref, fastest = min(mine, key=lambda m: m.p50_ms), min(candidates, key=lambda m: m.p50_ms)
            which = f" ({(labels or {}).get(ref.system, ref.system)})" if len(mine) > 1 else ""
            out.append(Verdict(workload, f"p50 latency, {label}{which}", ref.p50_ms, fastest.system, fastest.p50_ms,
                               higher_is_better=False, unit="ms"))
            ref, fastest = min(mine, key=lambda m: m.p99_ms), min(candidates, key=lambda m: m.p99_ms)
            which = f" ({(labels or {}).get(ref.system, ref.system)})" if len(mine) > 1 else ""
            out.append(Verdict(workload, f"p99 latency, {label}{which}", ref.p99_ms, fastest.system, fastest.p99_ms,
                               higher_is_better=False, unit="ms"))
    return out
