"""PStateLayout and View: costs, layout invariants, semantics at the edges, and error messages."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from headwater.errors import DefinitionError, PathError, SchemaError
from headwater.pstate import List, Map, PStateLayout, Record, Set, Txn, View
from headwater.storage import MemoryStore
from tests.pstate.support import CountingReader, Harness, LocalExecutor, commit

UTC = dt.timezone.utc
ORDERS = Map(int, Map(str, Record(sku=str, quantity=int, tags=Set(str)), subindexed=True))


def fill(harness: Harness, user: int, count: int) -> None:
    harness.view[user].merge({f"order-{i:05}": {"sku": "x", "quantity": i} for i in range(count)})
    harness.commit()


def counting_view(harness: Harness) -> tuple[View, CountingReader]:
    counter = CountingReader(harness.store.reader("pstate"))
    return View(LocalExecutor(harness.layout, Txn(counter)), harness.schema), counter


# --- costs ---------------------------------------------------------------------------------------


def test_size_and_point_reads_touch_constant_keys_in_a_big_subindexed_map(store):
    harness = Harness(store, ORDERS)
    fill(harness, 7, 10_000)
    view, counter = counting_view(harness)
    assert view[7].size() == 10_000
    assert counter.touched <= 1
    counter.reset()
    assert view[7]["order-05000"]["quantity"].get() == 5000
    assert counter.touched <= 1
    counter.reset()
    assert view[7]["order-05000"].exists() and not view[7]["nope"].exists()
    assert counter.touched <= 2


def test_a_range_with_a_limit_touches_about_limit_keys(store):
    harness = Harness(store, ORDERS)
    fill(harness, 7, 10_000)
    view, counter = counting_view(harness)
    keys = view[7].keys("order-03000", "order-09000", limit=10)
    assert keys == [f"order-{i:05}" for i in range(3000, 3010)]
    assert counter.iterates == 1 and counter.yielded <= 11
    counter.reset()
    items = view[7].items(stop="order-09000", limit=10, reverse=True)
    assert [k for k, _ in items] == [f"order-{i:05}" for i in range(8999, 8989, -1)]
    assert items[0][1] == {"sku": "x", "quantity": 8999}
    assert counter.yielded <= 11


def test_a_point_write_in_a_big_subindexed_map_writes_constant_keys(store):
    harness = Harness(store, ORDERS)
    fill(harness, 7, 10_000)
    counter = CountingReader(store.reader("pstate"))
    txn = Txn(counter)
    harness.layout.write(txn, (7, "order-new"), "set", ({"sku": "y", "quantity": 1},))
    harness.layout.write(txn, (7, "order-00001", "quantity"), "increment", (5,))
    assert counter.touched <= 8
    assert len(txn.pending()) == 3  # the new order, the map's count, the changed order


def test_point_writes_read_each_key_they_need_once(store):
    harness = Harness(store, Map(str, Record(n=int, items=Map(int, str, subindexed=True))))
    harness.view["a"].set({"n": 1, "items": {1: "x"}})
    harness.commit()
    counter = CountingReader(store.reader("pstate"))
    txn = Txn(counter)
    harness.layout.write(txn, ("a", "items", 2), "set", ("y",))  # a new element: its key, then its map's count
    assert counter.gets == 2
    counter.reset()
    harness.layout.write(txn, ("a", "n"), "increment", (3,))  # an existing blob: read once, rewritten
    assert counter.gets == 1
    assert harness.layout.read(txn, ("a",), "get") == {"n": 4, "items": {1: "x", 2: "y"}}


def test_appending_to_a_subindexed_list_is_constant(store):
    harness = Harness(store, Map(str, List(int, subindexed=True)))
    harness.view["log"].extend(list(range(5000)))
    harness.commit()
    counter = CountingReader(store.reader("pstate"))
    txn = Txn(counter)
    harness.layout.write(txn, ("log",), "append", (5000,))
    assert counter.touched <= 3 and len(txn.pending()) == 2
    assert harness.layout.read(txn, ("log", -1), "get") == 5000
    assert harness.layout.read(txn, ("log",), "slice", (-3, None)) == [4998, 4999, 5000]


# --- layout invariants ---------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [(1, 2), (1, 10), (1, 256), (255, 256)])
def test_pstates_sharing_a_column_family_never_collide(store, ids):
    schema = Map(int, Map(str, int, subindexed=True))
    first, second = (Harness(store, schema, pstate_id) for pstate_id in ids)
    first.view[1]["a"].set(1)
    second.view[1]["b"].set(2)
    first.commit()
    second.commit()
    first.abort()
    second.abort()
    assert first.view.get() == {1: {"a": 1}}
    assert second.view.get() == {1: {"b": 2}}
    assert first.view.size() == 1 and second.view[1].size() == 1


def test_subindexed_lists_of_split_elements_shift_whole_subtrees(store):
    harness = Harness(store, List(Map(str, Set(int, subindexed=True), subindexed=True), subindexed=True),
                      partitioned=False)
    view = harness.view
    view.extend([{"a": {1}}, {"b": {2, 3}}, {"c": set()}])
    view.insert(1, {"new": {9}})
    assert view.get() == [{"a": {1}}, {"new": {9}}, {"b": {2, 3}}, {"c": set()}]
    harness.commit()
    view = harness.view
    view[0].delete()
    view[-1].delete()
    assert view.get() == [{"new": {9}}, {"b": {2, 3}}]
    assert view[1]["b"].size() == 2 and view.size() == 2
    harness.commit()
    assert harness.view.get() == [{"new": {9}}, {"b": {2, 3}}]


def test_typed_keys_come_back_typed_and_sorted(store):
    schema = Map(uuid.UUID, Map(dt.datetime, int, subindexed=True))
    harness = Harness(store, schema)
    user = uuid.UUID(int=5)
    later, earlier = dt.datetime(2024, 6, 1), dt.datetime(2024, 1, 1, tzinfo=UTC)
    harness.view[user][later].set(2)
    harness.view[user][earlier].set(1)
    assert harness.view[user].keys() == [earlier, later.replace(tzinfo=UTC)]
    assert harness.view[user][later.replace(tzinfo=UTC)].get() == 2


def test_a_discarded_txn_leaves_storage_untouched(store):
    harness = Harness(store, ORDERS)
    harness.view[1]["o"].set({"sku": "a", "quantity": 1})
    harness.commit()
    harness.view[1]["o"]["quantity"].increment(10)
    harness.view[2]["p"].set({"sku": "b"})
    harness.view[1].delete()
    assert harness.view[1].get() is None
    harness.abort()
    assert harness.view.get() == {1: {"o": {"sku": "a", "quantity": 1}}}


def test_a_partitioned_root_always_exists(store):
    harness = Harness(store, Map(int, int))
    assert harness.view.get() == {} and harness.view.exists() and harness.view.size() == 0
    unpartitioned = Harness(store, List(int), 2, partitioned=False)
    assert unpartitioned.view.get() is None and not unpartitioned.view.exists()


def test_partitioning_a_non_map_is_a_definition_error():
    with pytest.raises(DefinitionError, match="only a top-level Map"):
        PStateLayout(List(int), 1, top_level_map_partitioned=True)


# --- semantics at the edges ----------------------------------------------------------------------


def test_writing_below_absent_maps_and_records_creates_them(store):
    harness = Harness(store, Map(int, Map(str, Record(a=int, tags=Set(str, subindexed=True)))))
    view = harness.view
    view[1]["x"]["tags"].add("t")
    view[2]["y"]["a"].set(3)
    assert view.get() == {1: {"x": {"tags": {"t"}}}, 2: {"y": {"a": 3}}}
    assert view[1]["x"]["a"].get() is None
    assert view[1]["x"].size() == 1
    view[3]["z"]["tags"].discard("t")  # removing from nothing creates nothing
    view[3]["z"].delete()
    assert view.keys() == [1, 2]


def test_increment_update_and_defaults(store):
    harness = Harness(store, Map(str, Record(n=int, f=float, name=str)))
    view = harness.view
    view["a"]["n"].increment()
    view["a"]["n"].increment(4)
    view["a"]["f"].increment(0.5)
    view["a"]["name"].update(lambda old: old + "!", default="hi")
    assert view["a"].get() == {"n": 5, "f": 0.5, "name": "hi!"}
    assert view["b"]["n"].get(0) == 0
    with pytest.raises(PathError, match=r"increment\(\) needs a number, but test.p\['a'\]\['name'\] holds str"):
        view["a"]["name"].increment()
    with pytest.raises(SchemaError, match="increment\\(\\) needs a number, got bool"):
        view["a"]["n"].increment(True)


def test_values_under_any_can_be_navigated(store):
    harness = Harness(store, Map(str, Any))
    view = harness.view
    view["doc"]["title"].set("hello")
    view["doc"]["ids"].set([uuid.UUID(int=1)])
    assert view["doc"].get() == {"title": "hello", "ids": [uuid.UUID(int=1)]}
    assert view["doc"]["ids"][0].get() == uuid.UUID(int=1)
    assert view["doc"]["missing"]["deeper"].get("d") == "d"


def test_a_failing_write_writes_nothing(store):
    harness = Harness(store, Map(int, Map(str, Record(a=int, xs=List(int, subindexed=True)), subindexed=True)))
    view = harness.view
    with pytest.raises(SchemaError, match=r"Expected `int`, got `str` \('x'\) at \$\[1\]\['k'\]\['a'\]"):
        view[1]["k"].set({"a": "x"})
    with pytest.raises(SchemaError, match=r"\$\[1\]\['k'\]\['xs'\]\[2\]"):
        view[1]["k"]["xs"].extend([1, 2, "three"])
    with pytest.raises(SchemaError, match="unknown field 'b'"):
        view[1]["k"].merge({"a": 1, "b": 2})
    with pytest.raises(PathError, match=r"list index 0 is out of range for the list of 0 elements at \$\[1\]\['k'\]\['xs'\]"):
        view[1]["k"]["xs"][0].set(5)
    with pytest.raises(ZeroDivisionError):
        view[1]["k"]["a"].update(lambda old: 1 // 0)
    assert harness.txn.pending() == []


@pytest.mark.parametrize("steps", [("k",), ("k", "a")], ids=["whole value", "inside a value"])
def test_update_runs_its_function_once_when_the_result_does_not_fit(store, steps):
    harness = Harness(store, Map(str, Record(a=int, b=int)))
    calls = []

    def bad(old):
        calls.append(old)
        return "not an int" if len(steps) == 2 else {"a": "not an int"}

    view = harness.view
    for step in steps:
        view = view[step]
    with pytest.raises(SchemaError, match=r"at \$\['k'\]\['a'\]"):
        view.update(bad, 0)
    assert calls == [0]
    assert harness.txn.pending() == []


def test_wrong_steps_fail_where_they_are_written(store):
    view = Harness(store, ORDERS).view
    with pytest.raises(PathError, match=r"key 'u' does not fit Map\(int, .*at test.p: expected an int, got str"):
        view["u"]
    with pytest.raises(PathError, match=r"key 5 does not fit Map\(str, .* at test.p\[1\]: expected a str, got int 5"):
        view[1][5]
    with pytest.raises(PathError, match=r"has no field 'qty'; its fields are sku, quantity, tags"):
        view[1]["o"]["qty"]
    with pytest.raises(PathError, match=r"test.p\[1\]\['o'\]\['tags'\] with 'x': set elements hold no values"):
        view[1]["o"]["tags"]["x"]
    with pytest.raises(PathError, match=r"append\(\) applies to a list, but test.p\[1\] is Map"):
        view[1].append(3)
    with pytest.raises(PathError, match=r"range bound 3 does not fit Map\(str"):
        view[1].keys(3)


def test_view_refuses_misleading_python_protocols(store):
    view = Harness(store, ORDERS).view
    with pytest.raises(TypeError, match="not iterable; iterate over test.p\\[1\\].keys"):
        list(view[1])
    with pytest.raises(TypeError, match="exists"):
        bool(view[1])
    with pytest.raises(TypeError, match="contains"):
        _ = 3 in view
    assert repr(view[1]["o"]) == "<View test.p[1]['o']: Record(sku=str, quantity=int, tags=Set(str))>"
    assert view[1]["o"].steps == (1, "o")


def test_views_hand_canonical_steps_to_the_executor():
    seen = []

    class Recorder:
        def read(self, steps, op, args=(), kwargs=None):
            seen.append((steps, op, args, kwargs))

        def write(self, steps, op, args=(), kwargs=None):
            seen.append((steps, op, args, kwargs))

    view = View(Recorder(), Map(float, Map(dt.datetime, int)), name="m.p")
    view[1][dt.datetime(2024, 1, 1)].increment(2)
    view[2].keys(limit=3)
    assert seen == [
        ((1.0, dt.datetime(2024, 1, 1, tzinfo=UTC)), "increment", (2,), {}),
        ((2.0,), "keys", (None, None), {"limit": 3, "reverse": False}),
    ]


def test_layout_read_and_write_refuse_the_wrong_kind_of_operation():
    layout = PStateLayout(Map(int, int), 1, top_level_map_partitioned=True)
    txn = Txn(MemoryStore().reader("pstate"))
    with pytest.raises(PathError, match=r"set\(\) changes the PState"):
        layout.read(txn, (1,), "set", (2,))
    with pytest.raises(PathError, match=r"get\(\) only reads"):
        layout.write(txn, (1,), "get")
    with pytest.raises(PathError, match="unknown PState operation 'frobnicate'"):
        layout.read(txn, (1,), "frobnicate")


def test_committed_state_survives_a_reopen(tmp_path):
    from headwater.storage import RocksStore

    store = RocksStore(tmp_path / "db")
    harness = Harness(store, ORDERS)
    harness.view[3]["o"].set({"sku": "a", "quantity": 2, "tags": {"x"}})
    commit(store, harness.txn)
    store.close()
    store = RocksStore(tmp_path / "db")
    assert Harness(store, ORDERS).view[3].items() == [("o", {"sku": "a", "quantity": 2, "tags": {"x"}})]
    store.close()
