import pytest

import headwater as hw


@pytest.fixture
def cluster():
    with hw.InProcessCluster() as c:
        yield c
