"""One client-facing suite, run in process and over HTTP, on every cluster kind (bytewax-style)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import headwater as hw
from tests.clusters import CLUSTER_KINDS, open_cluster
from tests.server.support import ALL_MODULES, deploy, served


@pytest.fixture(scope="module", params=CLUSTER_KINDS)
def backend(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hw.InProcessCluster, str, hw.Module]]:
    with open_cluster(request.param, tmp_path_factory.mktemp("data")) as cluster:
        jobs = deploy(cluster)
        with served(cluster) as url:
            yield cluster, url, jobs


@pytest.fixture(params=["in_process", "remote"])
def client(request: pytest.FixtureRequest, backend: Any) -> Iterator[Any]:
    cluster, url, jobs = backend
    if request.param == "in_process":
        yield cluster
        return
    with hw.connect(url, modules=[*ALL_MODULES, jobs]) as remote:
        yield remote
