import pytest

from tests.clusters import ALL_KINDS, open_cluster


@pytest.fixture(params=ALL_KINDS)
def cluster(request, tmp_path):
    """The examples run on every cluster kind, RayCluster too."""
    with open_cluster(request.param, tmp_path / "data") as c:
        yield c
