"""The cluster kinds a test can run on: one engine, every host."""

from __future__ import annotations

from pathlib import Path

import headwater as hw

CLUSTER_KINDS = ["in_process", "local"]
LOCAL_WORKERS = 2  # LocalCluster in tests: two worker processes, as many as this machine's cores


def open_cluster(kind: str, path: Path | None) -> hw.InProcessCluster:
    return hw.InProcessCluster(path) if kind == "in_process" else hw.LocalCluster(path, workers=LOCAL_WORKERS)
