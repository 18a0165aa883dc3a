import os
import sys

import pytest

import headwater as hw
from tests.clusters import ALL_KINDS, open_cluster

# In-process clusters of the suite read across the task seam as bytes, as worker processes do.
os.environ.setdefault("HEADWATER_STRICT_SEAM", "1")


@pytest.fixture
def cluster():
    with hw.InProcessCluster() as c:
        yield c


@pytest.fixture(params=ALL_KINDS)
def any_cluster(request, tmp_path):
    """The same test on every cluster kind, RayCluster too: one engine, every host (the engine and
    client suites, which are much longer, run on CLUSTER_KINDS)."""
    with open_cluster(request.param, tmp_path / "data") as c:
        yield c


def pytest_sessionfinish(session, exitstatus):
    """Stop the session's Ray (tests.clusters.ensure_ray), if a test started it."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
