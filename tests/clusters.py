"""The cluster kinds a test can run on: one engine, every host."""

from __future__ import annotations

from pathlib import Path

import headwater as hw

# The kinds the engine, client and transport suites run on. RayCluster runs the same worker
# processes as LocalCluster under another supervisor, so it runs a chosen part of the suite (the
# examples, and tests/cluster/test_ray_cluster.py): on every engine test it would add minutes.
CLUSTER_KINDS = ["in_process", "local"]
ALL_KINDS = [*CLUSTER_KINDS, "ray"]
LOCAL_WORKERS = 2  # LocalCluster in tests: two worker processes, as many as this machine's cores
RAY_CPUS = 2  # the session's Ray: as many CPUs as this machine's cores


def ensure_ray() -> None:
    """Start the test session's Ray once (RayClusters join it, and leave it running): it takes seconds.

    `pytest_sessionfinish` in tests/conftest.py stops it."""
    import ray

    if not ray.is_initialized():
        # log_to_driver=False: the workers' output stays in Ray's log files, where no thread prints it
        # into whichever test's captured output is current.
        # address="local": a Ray of the session's own, never one another process started on this machine.
        ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, logging_level="warning",
                 log_to_driver=False)


def open_cluster(kind: str, path: Path | None) -> hw.InProcessCluster:
    if kind == "in_process":
        return hw.InProcessCluster(path)
    if kind == "ray":
        ensure_ray()
        return hw.RayCluster(path=path, workers=LOCAL_WORKERS)
    return hw.LocalCluster(path, workers=LOCAL_WORKERS)
