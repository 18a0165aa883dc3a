import pytest

import headwater as hw

# Cluster kinds the suites that take `any_cluster` run on. LocalCluster runs two worker processes.
CLUSTER_KINDS = ["in_process", "local"]


def open_cluster(kind: str, path) -> hw.InProcessCluster:
    return hw.InProcessCluster(path) if kind == "in_process" else hw.LocalCluster(path, workers=2)


@pytest.fixture
def cluster():
    with hw.InProcessCluster() as c:
        yield c


@pytest.fixture(params=CLUSTER_KINDS)
def any_cluster(request, tmp_path):
    """The same test on every cluster kind: one engine, every host."""
    with open_cluster(request.param, tmp_path / "data") as c:
        yield c
