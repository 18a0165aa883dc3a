import pytest

from headwater.storage import MemoryStore, RocksStore


@pytest.fixture(params=["memory", "rocks"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else RocksStore(tmp_path / "db")
    yield s
    s.close()
