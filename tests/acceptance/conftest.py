import pytest


@pytest.fixture
def cluster(any_cluster):
    """The examples run on every cluster kind."""
    return any_cluster
