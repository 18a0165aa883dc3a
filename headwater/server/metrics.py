"""Live numbers: Prometheus metrics at /metrics and the same facts as JSON for the UI and CLI.

Counters and the ack-latency histogram are recorded as requests are served. Depot sizes,
topology progress, lag and dead letters are read from the tasks when asked for (at scrape time),
so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from headwater.client.cluster import Cluster

__all__ = ["Metrics", "cluster_stats", "merge_process_metrics"]

LATENCIES_KEPT = 1024  # recent ack latencies per depot, for the percentiles the UI shows
_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def module_stats(cluster: Cluster, module: str, hosts: list[dict[str, Any]]) -> dict[str, Any]:
    """Depot end offsets, and per topology: records processed, lag and dead letters; `hosts` is the
    module's part of `cluster.status()`."""
    runtime = cluster.runtime(module)
    ends = {}
    for depot in runtime.depots.values():
        client = cluster.depot(module, depot.name)
        ends[depot.name] = [client.partition_info(p).end_offset for p in range(depot.partitions)]
    progress = cluster.progress(module)
    topologies = []
    for stream in runtime.module.topologies.values():
        processed = lag = 0
        for decl in stream.depots:
            for done, end in zip(progress[stream.name][decl.name], ends[decl.name], strict=True):
                processed += done
                lag += max(0, end - done)
        dead = len(cluster.dead_letters(module, stream.name))
        topologies.append({"name": stream.name, "kind": "stream" if stream.name in runtime.streams else "microbatch",
                           "depots": [d.name for d in stream.depots],
                           "processed": processed, "lag": lag, "dead_letters": dead})
    depots = [{"name": name, "partitions": offsets, "records": sum(offsets)} for name, offsets in ends.items()]
    migrations = getattr(cluster, "migrations", None)
    return {"name": runtime.name, "tasks": runtime.tasks, "version": runtime.catalog.version, "depots": depots,
            "topologies": topologies, "hosts": hosts, "migrations": migrations(module) if migrations else []}


def cluster_stats(cluster: Cluster, modules: Sequence[str],
                  status: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """`module_stats` of each module; `status` is `cluster.status()` if the caller has it already."""
    status = cluster.status() if status is None else status  # asks every task once, for all the modules
    return [module_stats(cluster, name, status.get(name, [])) for name in modules]


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Metrics:
    """The server's Prometheus registry (one per app, so several servers can live in one process)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        # What this process counts (requests it served), apart from what it reads from the tasks
        # (the same whichever process asks): with several processes serving, a scrape sums the first
        # over all of them and takes the second once.
        self.process_registry = CollectorRegistry(auto_describe=False)
        self.appends = Counter("headwater_appends", "Client appends by outcome.",
                               ["module", "depot", "ack", "outcome"], registry=self.process_registry)
        self.ack_latency = Histogram("headwater_ack_latency_seconds", "Time from receiving an append to its ack.",
                                     ["module", "depot", "ack"], buckets=_LATENCY_BUCKETS_S,
                                     registry=self.process_registry)
        self.requests = Counter("headwater_http_requests", "HTTP API requests by endpoint and status.",
                                ["endpoint", "status"], registry=self.process_registry)

        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._appended: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def _child(self, metric: Any, *labels: str) -> Any:
        # Looking a labelled child up takes a lock and formats its labels on every request: keep
        # each one found (there are as many as label combinations, which Prometheus keeps anyway).
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        return child

    def observe_request(self, endpoint: str, status: int) -> None:
        self._child(self.requests, endpoint, str(status)).inc()

    def observe_append(self, module: str, depot: str, ack: str, outcome: str, seconds: float, count: int = 1) -> None:
        self._child(self.appends, module, depot, ack, outcome).inc(count)
        if outcome != "ok":
            return
        with self._lock:
            self._appended[(module, depot)] = self._appended.get((module, depot), 0) + count
        if ack == "none":
            return
        self._child(self.ack_latency, module, depot, ack).observe(seconds)
        with self._lock:
            self._recent.setdefault((module, depot), deque(maxlen=LATENCIES_KEPT)).append(seconds)

    def latency_ms(self, module: str, depot: str) -> dict[str, float | None]:
        with self._lock:
            ordered = sorted(self._recent.get((module, depot), ()))
        p50, p99 = _percentile(ordered, 0.5), _percentile(ordered, 0.99)
        return {"p50": None if p50 is None else p50 * 1000, "p99": None if p99 is None else p99 * 1000}

    def cluster_text(self, status: dict[str, list[dict[str, Any]]]) -> bytes:
        """The gauges read from the tasks (depot ends, progress, lag, dead letters), as Prometheus text."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ClusterCollector(self.cluster, status))
        return generate_latest(registry)

    def appended(self, module: str, depot: str) -> int:
        """Appends this server acknowledged for the depot since it started."""
        with self._lock:
            return self._appended.get((module, depot), 0)


def merge_process_metrics(texts: list[str]) -> CollectorRegistry:
    """The per-process metrics of several processes (Prometheus text), as one: counts and sums
    added up sample by sample, `_created` times the earliest."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (merged.name, sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = sample.value
                elif sample.name.endswith("_created"):
                    values[key] = min(values[key], sample.value)
                else:
                    values[key] += sample.value
    for (family_name, sample_name, labels), value in values.items():
        families[family_name].add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return registry


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class _ClusterCollector:
    """Reads depot sizes, topology progress, lag and dead letters from the tasks at scrape time."""

    def __init__(self, cluster: Cluster, status: dict[str, list[dict[str, Any]]]) -> None:
        self.cluster = cluster
        self.status = status

    def collect(self) -> Any:
        ends = GaugeMetricFamily("headwater_depot_end_offset", "Offset the next append to a partition gets.",
                                 labels=["module", "depot", "partition"])
        processed = GaugeMetricFamily("headwater_topology_processed_records", "Records a topology has processed.",
                                      labels=["module", "topology"])
        lag = GaugeMetricFamily("headwater_topology_lag_records", "Depot end offset minus processed offset, summed.",
                                labels=["module", "topology"])
        dead = GaugeMetricFamily("headwater_dead_letters", "Dead letters waiting to be retried.",
                                 labels=["module", "topology"])
        for stats in cluster_stats(self.cluster, self.cluster.modules(), self.status):
            module = stats["name"]
            for depot in stats["depots"]:
                for partition, end in enumerate(depot["partitions"]):
                    ends.add_metric([module, depot["name"], str(partition)], end)
            for topology in stats["topologies"]:
                processed.add_metric([module, topology["name"]], topology["processed"])
                lag.add_metric([module, topology["name"]], topology["lag"])
                dead.add_metric([module, topology["name"]], topology["dead_letters"])
        return [ends, processed, lag, dead]
