"""One conformance suite for every store adapter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import Unavailable
from headwater.storage import Batch, MemoryStore, RocksStore


@pytest.fixture(params=["memory", "rocks"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else RocksStore(tmp_path / "db")
    yield s
    s.close()


def test_batch_is_atomic_and_readable(store):
    batch = Batch()
    batch.put("pstate", b"a", b"1")
    batch.put("depot", b"a", b"2")
    store.write(batch, sync=True)
    assert store.get("pstate", b"a") == b"1"
    assert store.get("depot", b"a") == b"2"
    assert store.get("meta", b"a") is None


def test_iterate_forward_and_reverse_with_bounds(store):
    batch = Batch()
    for k in [b"a", b"b", b"ba", b"c", b"d"]:
        batch.put("pstate", k, k.upper())
    store.write(batch, sync=False)
    assert [k for k, _ in store.iterate("pstate", b"b", b"d")] == [b"b", b"ba", b"c"]
    assert [k for k, _ in store.iterate("pstate", b"b", b"d", reverse=True)] == [b"c", b"ba", b"b"]
    assert [k for k, _ in store.iterate("pstate", b"", None, reverse=True)] == [b"d", b"c", b"ba", b"b", b"a"]
    assert [v for _, v in store.iterate("pstate", b"c")] == [b"C", b"D"]


def test_range_deletion_applies_before_puts(store):
    batch = Batch()
    for k in [b"x1", b"x2", b"x3"]:
        batch.put("pstate", k, b"v")
    store.write(batch, sync=False)
    batch = Batch()
    batch.delete_range("pstate", b"x", b"y")
    batch.put("pstate", b"x2", b"new")
    store.write(batch, sync=False)
    assert list(store.iterate("pstate", b"x", b"y")) == [(b"x2", b"new")]


def test_write_after_close_is_unavailable(store):
    store.close()
    with pytest.raises(Unavailable):
        store.write(Batch(), sync=False)


def test_rocks_data_survives_reopen(tmp_path):
    s = RocksStore(tmp_path / "db")
    batch = Batch()
    batch.put("meta", b"k", b"v")
    s.write(batch, sync=True)
    s.close()
    s = RocksStore(tmp_path / "db")
    assert s.get("meta", b"k") == b"v"
    s.close()


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.binary(max_size=4), max_size=30),
    start=st.binary(max_size=3),
    stop=st.none() | st.binary(max_size=3),
    reverse=st.booleans(),
)
def test_adapters_agree_on_ranges(tmp_path_factory, keys, start, stop, reverse):
    rocks = RocksStore(tmp_path_factory.mktemp("db"))
    memory = MemoryStore()
    batch = Batch()
    for k in keys:
        batch.put("pstate", k, k)
    try:
        for s in (rocks, memory):
            s.write(batch, sync=False)
        expected = sorted(k for k in set(keys) if k >= start and (stop is None or k < stop))
        if reverse:
            expected.reverse()
        for s in (rocks, memory):
            assert [k for k, _ in s.iterate("pstate", start, stop, reverse=reverse)] == expected
    finally:
        rocks.close()


def test_sync_makes_unsynced_writes_durable(store):
    batch = Batch()
    batch.put("depot", b"k", b"v")
    store.write(batch, sync=False)
    store.sync()
    assert store.get("depot", b"k") == b"v"


def test_sync_of_a_closed_store_is_a_typed_error(store):
    store.close()
    with pytest.raises(Unavailable):
        store.sync()
