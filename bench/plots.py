"""PNG plots for docs/bench/: latency distributions and throughput against client count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["latency_cdf", "throughput_vs_clients", "bars"]

COLORS = ["#1f6feb", "#d1242f", "#8250df", "#1a7f37", "#bf8700", "#57606a"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(systems: list[str], name: str) -> str:
    return COLORS[systems.index(name) % len(COLORS)]


def latency_cdf(summaries: list[dict[str, Any]], path: Path, title: str, *, clients: int) -> str:
    """Cumulative distribution of latencies (log x) of every system at one client count."""
    plt = _pyplot()
    systems = list(dict.fromkeys(s["system"] for s in summaries))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for s in summaries:
        if s["clients"] != clients or not s["samples_ms"]:
            continue
        xs = s["samples_ms"]
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.plot(xs, ys, label=s["system"], color=_color(systems, s["system"]), linewidth=1.6)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of operations ≤ x")
    ax.axhline(0.99, color="#999", linewidth=0.7, linestyle=":")
    ax.set_title(f"{title} — {clients} client{'s' if clients != 1 else ''}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name


def throughput_vs_clients(summaries: list[dict[str, Any]], path: Path, title: str, *, unit: str = "operations/s") -> str:
    plt = _pyplot()
    systems = list(dict.fromkeys(s["system"] for s in summaries))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name in systems:
        points = sorted((s["clients"], s["ops_per_s"], [r["ops_per_s"] for r in s["runs"]])
                        for s in summaries if s["system"] == name)
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], marker="o", label=name, color=_color(systems, name), linewidth=1.8)
        for x, _, runs in points:
            ax.scatter([x] * len(runs), runs, color=_color(systems, name), s=8, alpha=0.4)
    ax.set_xscale("log", base=2)
    clients = sorted({s["clients"] for s in summaries})
    ax.set_xticks(clients, [str(c) for c in clients])
    ax.set_xlabel("concurrent clients (threads)")
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=0)
    ax.set_title(title + " (line: median of runs; dots: each run)")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name


def bars(values: dict[str, float], path: Path, title: str, *, unit: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.5 * len(values)), dpi=110)
    names = list(values)
    ax.barh(names, [values[n] for n in names], color=[COLORS[i % len(COLORS)] for i in range(len(names))])
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    for i, n in enumerate(names):
        ax.text(values[n], i, f" {values[n]:,.0f}", va="center", fontsize=8)
    ax.grid(True, axis="x", alpha=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name
