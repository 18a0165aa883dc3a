"""Txn: pending writes overlaid on committed state; read-your-writes; discard leaves storage alone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.pstate import Txn
from headwater.pstate.txn import prefix_end
from headwater.storage import Batch, MemoryStore
from tests.pstate.support import commit


def committed(store, pairs):
    batch = Batch()
    for key, value in pairs.items():
        batch.put("pstate", key, value)
    store.write(batch, sync=False)
    return store.reader("pstate")


def test_reads_its_own_writes(store):
    reader = committed(store, {b"a": b"1", b"b": b"2", b"c": b"3"})
    txn = Txn(reader)
    txn.put(b"b", b"20")
    txn.put(b"d", b"4")
    txn.delete(b"a")
    assert txn.get(b"a") is None
    assert txn.get(b"b") == b"20"
    assert txn.get(b"d") == b"4"
    assert list(txn.iterate(b"")) == [(b"b", b"20"), (b"c", b"3"), (b"d", b"4")]
    assert list(txn.iterate(b"", reverse=True)) == [(b"d", b"4"), (b"c", b"3"), (b"b", b"20")]
    assert list(txn.iterate(b"b", b"d")) == [(b"b", b"20"), (b"c", b"3")]


def test_range_delete_then_put_keeps_the_put(store):
    reader = committed(store, {b"k1": b"1", b"k2": b"2", b"k3": b"3", b"z": b"z"})
    txn = Txn(reader)
    txn.put(b"k4", b"4")
    txn.delete_range(b"k", prefix_end(b"k"))
    txn.put(b"k2", b"new")
    assert txn.get(b"k1") is None and txn.get(b"k4") is None
    assert list(txn.iterate(b"")) == [(b"k2", b"new"), (b"z", b"z")]
    assert list(txn.iterate(b"", reverse=True)) == [(b"z", b"z"), (b"k2", b"new")]
    assert txn.pending() == [(b"k1", None), (b"k2", b"new"), (b"k3", None)]
    assert txn.deleted_ranges() == [(b"k", b"l")]
    assert txn.pending(expand_ranges=False) == [(b"k2", b"new")]


def test_a_txn_merged_into_the_txn_below_reads_the_same_through_it(store):
    reader = committed(store, {b"k1": b"1", b"k2": b"2", b"z": b"z"})
    below = Txn(reader)
    below.put(b"a", b"a")
    below.put(b"k3", b"3")
    list(below.iterate(b""))  # sorted once, so the merge must keep the order bookkeeping right
    above = Txn(below)
    above.delete_range(b"k", prefix_end(b"k"))
    above.put(b"k2", b"new")
    above.put(b"b", b"b")
    expected = list(above.iterate(b""))
    above.merge_into(below)
    assert list(below.iterate(b"")) == expected == [(b"a", b"a"), (b"b", b"b"), (b"k2", b"new"), (b"z", b"z")]
    assert list(below.iterate(b"", reverse=True)) == expected[::-1]
    assert below.get(b"k1") is None and below.get(b"k3") is None


def test_range_deletes_can_go_to_the_batch_unexpanded(store):
    reader = committed(store, {b"k1": b"1", b"k2": b"2", b"z": b"z"})
    txn = Txn(reader)
    txn.delete_range(b"k", b"l")
    txn.put(b"k3", b"3")
    batch = Batch()
    for start, stop in txn.deleted_ranges():
        batch.delete_range("pstate", start, stop)
    for key, value in txn.pending(expand_ranges=False):
        batch.put("pstate", key, value) if value is not None else batch.delete("pstate", key)
    store.write(batch, sync=False)
    assert list(store.iterate("pstate", b"")) == [(b"k3", b"3"), (b"z", b"z")]


def test_a_savepoint_rolls_back_later_writes_only(store):
    txn = Txn(committed(store, {b"a": b"1"}))
    txn.put(b"b", b"2")
    savepoint = txn.savepoint()
    txn.put(b"c", b"3")
    txn.delete_range(b"", b"\xff")
    txn.rollback(savepoint)
    assert list(txn.iterate(b"")) == [(b"a", b"1"), (b"b", b"2")]


def test_discarding_a_txn_leaves_storage_untouched(store):
    reader = committed(store, {b"a": b"1"})
    txn = Txn(reader)
    txn.put(b"a", b"2")
    txn.delete_range(b"", b"\xff")
    del txn
    assert store.get("pstate", b"a") == b"1"
    txn = Txn(reader)
    txn.put(b"b", b"2")
    txn.clear()
    assert txn.pending() == [] and txn.get(b"b") is None


def test_iterating_while_writing_sees_the_snapshot_of_the_overlay(store):
    txn = Txn(committed(store, {b"a": b"1", b"c": b"3"}))
    txn.put(b"b", b"2")
    seen = []
    for key, _ in txn.iterate(b""):
        seen.append(key)
        txn.put(key + b"x", b"new")
    assert seen == [b"a", b"b", b"c"]


def test_prefix_end():
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff\xff") == b"b"


keys = st.binary(min_size=0, max_size=3)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.binary(min_size=1, max_size=2)),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("delete_range"), keys, keys),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, st.binary(min_size=1, max_size=2), max_size=10), operations, keys, st.none() | keys)
def test_txn_matches_a_dict_model(initial, ops, start, stop):
    store = MemoryStore()
    txn = Txn(committed(store, initial))
    model = dict(initial)
    for op, *args in ops:
        if op == "put":
            txn.put(*args)
            model[args[0]] = args[1]
        elif op == "delete":
            txn.delete(args[0])
            model.pop(args[0], None)
        else:
            low, high = sorted(args)
            txn.delete_range(low, high)
            model = {k: v for k, v in model.items() if not low <= k < high}
    expected = sorted((k, v) for k, v in model.items() if k >= start and (stop is None or k < stop))
    assert list(txn.iterate(start, stop)) == expected
    assert list(txn.iterate(start, stop, reverse=True)) == expected[::-1]
    for key in {*initial, *model, start}:
        assert txn.get(key) == model.get(key)
    commit(store, txn)
    assert list(store.iterate("pstate", b"")) == sorted(model.items())


steps_with_reads = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.binary(min_size=1, max_size=2)),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("delete_range"), keys, keys),
        st.tuples(st.just("iterate"), keys),  # sorts the pending keys mid-way
        st.tuples(st.just("savepoint")),
        st.tuples(st.just("rollback")),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, st.binary(min_size=1, max_size=2), max_size=10), steps_with_reads)
def test_txn_matches_a_dict_model_across_savepoints_and_reads(initial, steps):
    store = MemoryStore()
    txn = Txn(committed(store, initial))
    model = dict(initial)
    saved: tuple | None = None
    for op, *args in steps:
        if op == "put":
            txn.put(*args)
            model[args[0]] = args[1]
        elif op == "delete":
            txn.delete(args[0])
            model.pop(args[0], None)
        elif op == "delete_range":
            low, high = sorted(args)
            txn.delete_range(low, high)
            model = {k: v for k, v in model.items() if not low <= k < high}
        elif op == "iterate":
            assert list(txn.iterate(args[0])) == sorted((k, v) for k, v in model.items() if k >= args[0])
        elif op == "savepoint":
            saved = (txn.savepoint(), dict(model))
        elif saved is not None:
            txn.rollback(saved[0])
            model = dict(saved[1])
    assert list(txn.iterate(b"")) == sorted(model.items())
    assert list(txn.iterate(b"", reverse=True)) == sorted(model.items(), reverse=True)
    assert all(txn.get(key) == model.get(key) for key in {*initial, *model})
    commit(store, txn)
    assert list(store.iterate("pstate", b"")) == sorted(model.items())
