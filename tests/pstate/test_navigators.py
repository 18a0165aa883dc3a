"""select / select_one / transform with navigators on both layouts."""

from __future__ import annotations

import pytest

from headwater.errors import PathError, SchemaError
from headwater.pstate import (
    ALL,
    FIRST,
    LAST,
    MAP_KEYS,
    MAP_VALS,
    REMOVE,
    SIZE,
    List,
    Map,
    Record,
    Set,
    View,
    apply,
    must,
    nth,
    set_val,
    view,
)
from headwater.pstate import filter as hw_filter
from headwater.pstate import range as hw_range
from headwater.storage import MemoryStore
from tests.pstate.support import Harness

ORDERS = {"a": {"n": 1, "tags": {"x"}}, "b": {"n": 2, "xs": [5, 6]}, "c": {"n": 3, "tags": {"y", "z"}}}


def schema(subindexed: bool) -> Map:
    order = Record(n=int, tags=Set(str, subindexed=subindexed), xs=List(int, subindexed=subindexed))
    return Map(int, Map(str, order, subindexed=subindexed))


@pytest.fixture(params=[False, True], ids=["whole", "subindexed"])
def orders(request) -> View:
    harness = Harness(MemoryStore(), schema(request.param))
    harness.view[1].merge(ORDERS)
    return harness.view


def test_all_reaches_pairs_of_maps_and_elements_of_lists_and_sets(orders):
    assert orders.select(1, ALL) == list(ORDERS.items())
    assert orders.select(1, ALL, FIRST) == ["a", "b", "c"]
    assert orders.select(1, "b", "xs", ALL) == [5, 6]
    assert orders.select(1, "c", "tags", ALL) == ["y", "z"]


def test_map_keys_vals_first_last_nth(orders):
    assert orders.select(1, MAP_KEYS) == ["a", "b", "c"]
    assert orders.select(1, MAP_VALS, "n") == [1, 2, 3]
    assert orders.select(1, FIRST) == [("a", ORDERS["a"])]
    assert orders.select(1, LAST, LAST, "n") == [3]
    assert orders.select(1, nth(1), FIRST) == ["b"]
    assert orders.select(1, nth(-1), FIRST) == ["c"]
    assert orders.select(1, nth(7)) == []
    assert orders.select(1, "b", "xs", LAST) == [6]


def test_absent_keys_yield_none_and_must_yields_nothing(orders):
    assert orders.select(1, "zz") == [None]
    assert orders.select(1, must("zz")) == []
    assert orders.select(1, must("a"), "n") == [1]
    assert orders.select(2, ALL) == []


def test_range_is_one_sorted_value_until_all_reaches_its_elements(orders):
    assert orders.select(1, hw_range("b")) == [{"b": ORDERS["b"], "c": ORDERS["c"]}]
    assert orders.select(1, hw_range("a", "c"), ALL, FIRST) == ["a", "b"]
    assert orders.select(1, hw_range(limit=2, reverse=True), MAP_VALS, "n") == [3, 2]
    assert orders.select(1, "c", "tags", hw_range("z")) == [{"z"}]


def test_filter_view_and_size(orders):
    assert orders.select(1, MAP_VALS, hw_filter(lambda order: order["n"] > 1), "n") == [2, 3]
    assert orders.select(1, MAP_VALS, "n", view(lambda n: n * 10)) == [10, 20, 30]
    assert orders.select_one(1, SIZE) == 3
    assert orders.select(1, MAP_VALS, "tags", SIZE) == [1, 0, 2]


def test_select_one_wants_exactly_one(orders):
    assert orders.select_one(1, "a", "n") == 1
    with pytest.raises(PathError, match=r"select_one\(ALL\) at \$\[1\] found 3 values, not exactly one"):
        orders.select_one(1, ALL)
    with pytest.raises(PathError, match="found 0 values"):
        orders.select_one(1, must("zz"))


def test_transforms_set_apply_and_remove(orders):
    orders.transform(1, MAP_VALS, "n", apply(lambda n: n + 100))
    orders.transform(1, MAP_VALS, "tags", ALL, hw_filter(lambda tag: tag != "y"), REMOVE)
    orders.transform(1, "b", "xs", FIRST, set_val(50))
    assert orders[1].get() == {"a": {"n": 101, "tags": set()}, "b": {"n": 102, "xs": [50, 6]},
                               "c": {"n": 103, "tags": {"y"}}}


def test_transforms_remove_map_entries_and_list_elements_in_any_number(orders):
    orders[1]["b"]["xs"].extend([7, 8, 9])
    orders.transform(1, "b", "xs", ALL, hw_filter(lambda x: x % 2 == 0), REMOVE)
    assert orders[1]["b"]["xs"].get() == [5, 7, 9]
    orders.transform(1, ALL, hw_filter(lambda pair: pair[0] != "b"), REMOVE)
    assert orders[1].keys() == ["b"]


def test_transforming_pairs_can_rename_keys(orders):
    orders.transform(1, ALL, hw_filter(lambda pair: pair[0] == "a"), apply(lambda pair: ("z", pair[1])))
    assert orders[1].keys() == ["b", "c", "z"]
    assert orders[1]["z"].get() == ORDERS["a"]


def test_a_transform_through_a_view_writes_back(orders):
    orders.transform(1, "b", "n", view(lambda n: n * 2), apply(lambda n: n + 1))
    assert orders[1]["b"]["n"].get() == 5


def test_transforming_a_range_replaces_it(orders):
    orders.transform(1, hw_range("b"), set_val({"q": {"n": 9}}))
    assert orders[1].keys() == ["a", "q"]
    orders.transform(1, "a", "tags", hw_range(), REMOVE)
    assert orders[1]["a"]["tags"].get() == set()


def test_a_failing_transform_changes_nothing(orders):
    before = orders[1].get()
    with pytest.raises(SchemaError):
        orders.transform(1, MAP_VALS, "n", apply(lambda n: n if n < 3 else "three"))
    with pytest.raises(PathError, match="cannot transform SIZE"):
        orders.transform(1, SIZE, set_val(1))
    with pytest.raises(PathError, match="cannot transform a map key"):
        orders.transform(1, MAP_KEYS, set_val("k"))
    assert orders[1].get() == before


def test_transform_needs_an_operation(orders):
    with pytest.raises(PathError, match="ends with an operation"):
        orders.transform(1, ALL)


def test_leading_keys_become_steps_so_the_engine_can_route():
    seen = []

    class Recorder:
        def read(self, steps, op, args=(), kwargs=None):
            seen.append((steps, op, args))
            return []

        def write(self, steps, op, args=(), kwargs=None):
            seen.append((steps, op, args))

    root = View(Recorder(), schema(False), name="m.orders")
    root.select(1, "a", ALL)
    root[1].transform(MAP_VALS, "n", REMOVE)
    assert seen == [((1, "a"), "select", (ALL,)), ((1,), "transform", (MAP_VALS, "n", REMOVE))]
    with pytest.raises(PathError, match="expected an int"):
        root.select("not an int", ALL)
