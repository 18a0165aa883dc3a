"""The engine suite runs on every cluster kind: a test marked `in_process_only` says why it cannot."""

import pytest

from tests.clusters import CLUSTER_KINDS, open_cluster


@pytest.fixture(params=CLUSTER_KINDS)
def cluster(request, tmp_path):
    marker = request.node.get_closest_marker("in_process_only")
    if request.param != "in_process" and marker is not None:
        pytest.skip(f"in process only: {marker.args[0]}")
    with open_cluster(request.param, tmp_path / "data") as c:
        yield c
