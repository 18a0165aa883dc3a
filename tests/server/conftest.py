from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import headwater as hw
from tests.server.support import deploy, served


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[hw.InProcessCluster, str]]:
    with hw.InProcessCluster() as cluster:
        deploy(cluster)
        with served(cluster, max_body_bytes=4096) as url:
            yield cluster, url


@pytest.fixture
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[1]) as client:
        yield client
