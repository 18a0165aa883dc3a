"""The subindexing promise: every read and write gives the same result whether a collection is
subindexed or not.

Random sequences of operations run against every subindexed/not-subindexed combination of a
schema and against a plain-Python model. After every operation, each variant must give the
model's answer (or raise the model's error), and the whole PState must read the same. Txns
are committed or aborted at random, so atomicity is checked on the way.
"""

from __future__ import annotations

import copy
import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from headwater.errors import PathError, SchemaError
from headwater.pstate import ALL, FIRST, LAST, MAP_KEYS, MAP_VALS, REMOVE, SIZE, List, Map, Record, Set
from headwater.pstate import apply, must, nth, set_val, view
from headwater.pstate import filter as hw_filter
from headwater.pstate import range as hw_range
from headwater.schema import Schema
from headwater.schema.types import Leaf
from headwater.storage import MemoryStore, RocksStore
from tests.pstate.support import Harness

class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"

    def __deepcopy__(self, memo: dict) -> _Absent:
        return self  # a singleton, even in saved copies of the model


ABSENT: Any = _Absent()

# Each family is a schema shape; its arguments say which collections are subindexed.
FAMILIES = {
    "nested records": (3, lambda a, b, c: Map(int, Map(str, Record(
        a=int, tags=Set(str, subindexed=b), xs=List(int, subindexed=c)), subindexed=a))),
    "lists in a map": (1, lambda a: Map(str, List(int, subindexed=a))),
    "top-level set": (1, lambda a: Set(int, subindexed=a)),
    "list of maps": (2, lambda a, b: List(Map(str, int, subindexed=b), subindexed=a)),
    "top-level record": (2, lambda a, b: Record(count=int, names=Map(str, List(str, subindexed=b), subindexed=a))),
    "lists of sets": (2, lambda a, b: Map(int, List(Set(int, subindexed=b), subindexed=a))),
}

INT_KEYS = [-1, 0, 1]
STR_KEYS = ["a", "b", "c"]


def variants(family: str) -> list[Schema]:
    arity, make = FAMILIES[family]
    return [make(*flags) for flags in itertools.product([False, True], repeat=arity)]


# --- drawing random paths, operations and values -----------------------------------------------


class Draw:
    """Random choices, uniform (hypothesis' own draws favour the first option, which starves
    rare sequences such as building a list and then deleting from its middle)."""

    def __init__(self, data: Any) -> None:
        self.random = data.draw(st.randoms(use_true_random=False))

    def choice(self, options: list) -> Any:
        return self.random.choice(options)

    def chance(self, percent: int) -> bool:
        return self.random.randrange(100) < percent

    def number(self, low: int, high: int) -> int:
        return self.random.randint(low, high)

    def key(self, key_type: Any) -> Any:
        return self.choice(INT_KEYS if key_type is int else STR_KEYS)

    def value(self, schema: Schema) -> Any:
        if isinstance(schema, Leaf):
            return self.key(schema.leaf_type)
        size = self.number(0, 4)
        if isinstance(schema, Map):
            return {self.key(schema.key_type): self.value(schema.value_schema) for _ in range(size)}
        if isinstance(schema, List):
            return [self.value(schema.value_schema) for _ in range(size)]
        if isinstance(schema, Set):
            return {self.key(schema.element_type) for _ in range(size)}
        return {name: self.value(field) for name, field in schema.fields.items() if self.chance(60)}

    def path(self, schema: Schema, *, first_step: bool) -> tuple[tuple, list[Schema]]:
        steps: list = []
        schemas = [schema]
        while isinstance(schema, (Map, List, Record)) and (first_step or self.chance(55)):
            first_step = False
            if isinstance(schema, Map):
                step = self.key(schema.key_type)
            elif isinstance(schema, List):
                step = self.choice([-2, -1, 0, 1, 2, 3])
            else:
                step = self.choice(list(schema.fields))
            schema = schema.child(step, "$")[1]
            steps.append(step)
            schemas.append(schema)
        return tuple(steps), schemas

    def range_args(self, schema: Map | Set) -> tuple[tuple, dict]:
        key_type = schema.key_type if isinstance(schema, Map) else schema.element_type
        bound = lambda: None if self.chance(40) else self.key(key_type)  # noqa: E731
        kwargs = {"limit": None if self.chance(50) else self.number(0, 3),
                  "reverse": self.chance(40)}
        return (bound(), bound()), kwargs


class Even:
    """A filter() predicate that depends only on the value (so every layout agrees)."""

    def __call__(self, value: Any) -> bool:
        weight = value if isinstance(value, int) else 0 if value is None else len(value)
        return weight % 2 == 0

    def __repr__(self) -> str:
        return "Even()"


class Twice:
    """A view() function that keeps the leaf's type, so a transform can write through it."""

    def __call__(self, value: Any) -> Any:
        return None if value is None else value * 2

    def __repr__(self) -> str:
        return "Twice()"


NAVIGATORS_BY_KIND = {
    "map": ["key", "must", "ALL", "MAP_VALS", "MAP_KEYS", "FIRST", "LAST", "nth", "range", "range ALL", "SIZE",
            "filter"],
    "list": ["key", "must", "ALL", "FIRST", "LAST", "nth", "SIZE", "filter"],
    "set": ["ALL", "FIRST", "LAST", "nth", "range", "range ALL", "SIZE", "filter"],
    "record": ["key", "must", "ALL", "SIZE", "filter"],
    "leaf": ["view", "filter"],
}


def draw_navigators(draw: Draw, schema: Schema) -> tuple[tuple, tuple[str, Schema]]:
    """A path of 1-3 navigators, and what it ends on: ("target" | "entry" | "member" | ...,
    the schema there)."""
    navs: list = []
    end = ("target", schema)
    while len(navs) < 3 and end[0] == "target" and (not navs or draw.chance(60)):
        added, end = draw_navigator(draw, end[1])
        navs.extend(added)
    return tuple(navs), end


def draw_navigator(draw: Draw, schema: Any) -> tuple[list, tuple[str, Any]]:
    choice = draw.choice(NAVIGATORS_BY_KIND[schema.kind])
    element = {"map": "entry", "record": "entry", "set": "member"}.get(schema.kind, "target")
    element_end = (element, schema.value_schema if schema.kind == "list" else schema)
    if choice in ("key", "must"):
        step = draw.path(schema, first_step=True)[0][0]
        child = schema.child(step, "$")[1]
        return [step if choice == "key" else must(step)], ("target", child)
    if choice in ("ALL", "FIRST", "LAST", "nth"):
        nav = {"ALL": ALL, "FIRST": FIRST, "LAST": LAST}.get(choice) or nth(draw.choice([0, 1, -2]))
        return [nav], element_end
    if choice == "MAP_VALS":
        return [MAP_VALS], ("target", schema.value_schema)
    if choice in ("MAP_KEYS", "SIZE"):
        return [MAP_KEYS if choice == "MAP_KEYS" else SIZE], ("computed", None)
    if choice.startswith("range"):
        (start, stop), kwargs = draw.range_args(schema)
        nav = hw_range(start, stop, **kwargs)
        return ([nav, ALL], element_end) if choice == "range ALL" else ([nav], ("ranged", schema))
    if choice == "view":
        return [view(Twice())], ("view", schema)
    return [hw_filter(Even())], ("target", schema)


def draw_transform_op(draw: Draw, end: tuple[str, Any]) -> Any:
    kind, schema = end
    if draw.chance(30) or kind in ("entry", "computed"):
        return REMOVE if draw.chance(70) else set_val(1)
    if kind == "member":
        return set_val(draw.key(schema.element_type))
    if kind in ("target", "view"):
        return set_val(draw.value(schema)) if draw.chance(50) else apply(Replace(draw.value(schema)))
    return set_val(draw.value(schema))  # a ranged sub-map or sub-set


READS_BY_KIND = {
    "leaf": ["get", "exists"],
    "map": ["get", "exists", "size", "keys", "items", "values"],
    "list": ["get", "exists", "size", "slice"],
    "set": ["get", "exists", "size", "keys", "values", "contains"],
    "record": ["get", "exists", "size"],
}
WRITES_BY_KIND = {
    "leaf": ["set", "delete", "update", "increment"],
    "map": ["set", "delete", "update", "merge"],
    "list": ["set", "delete", "update", "append", "extend", "insert"],
    "set": ["set", "delete", "update", "add", "discard"],
    "record": ["set", "delete", "update", "merge"],
}


class Replace:
    """An update() function: a deterministic new value (ints grow from the old value)."""

    def __init__(self, new: Any) -> None:
        self.new = new

    def __call__(self, old: Any) -> Any:
        if isinstance(self.new, int) and isinstance(old, int):
            return old * 2 + self.new
        return copy.deepcopy(self.new)

    def __repr__(self) -> str:
        return f"Replace({self.new!r})"


def draw_operation(draw: Draw, schema: Schema, op: str) -> tuple[tuple, dict]:
    if op in ("keys", "items", "values"):
        return draw.range_args(schema)  # type: ignore[arg-type]
    if op == "slice":
        bound = lambda: None if draw.chance(30) else draw.choice([-3, -1, 0, 1, 2, 4])  # noqa: E731
        return (bound(), bound()), {}
    if op in ("contains", "add", "discard"):
        return (draw.key(schema.element_type),), {}  # type: ignore[attr-defined]
    if op == "get":
        return ("default",), {}
    if op in ("set", "append"):
        return (draw.value(schema if op == "set" else schema.value_schema),), {}  # type: ignore[attr-defined]
    if op == "extend":
        return ([draw.value(schema.value_schema) for _ in range(draw.choice([0, 1, 2]))],), {}  # type: ignore[attr-defined]
    if op == "insert":
        return (draw.choice([-4, -1, 0, 1, 2, 5]), draw.value(schema.value_schema)), {}  # type: ignore[attr-defined]
    if op == "update":
        return (Replace(draw.value(schema)), 0 if isinstance(schema, Leaf) else None), {}
    if op == "increment":
        return (draw.choice([1, -2, 5]),), {}
    if op == "merge":
        return (draw.value(schema),), {}
    return (), {}


# --- the model: plain Python values -------------------------------------------------------------


class Model:
    def __init__(self, partitioned: bool) -> None:
        self.partitioned = partitioned
        self.root: Any = {} if partitioned else ABSENT

    def resolve(self, steps: tuple) -> tuple:
        """Steps with negative list indexes counted from the end, as far as lists exist."""
        value, resolved = self.root, []
        for step in steps:
            if isinstance(value, list) and step < 0:
                step += len(value)
            resolved.append(step)
            value = child(value, step)
        return tuple(resolved)

    def at(self, steps: tuple) -> Any:
        value = self.root
        for step in steps:
            value = child(value, step)
        return value

    def read(self, schema: Schema, steps: tuple, op: str, args: tuple, kwargs: dict) -> Any:
        return MODEL_READS[op](schema, self.at(self.resolve(steps)), *args, **kwargs)

    def write(self, schemas: list[Schema], steps: tuple, op: str, args: tuple, kwargs: dict) -> None:
        if op == "increment" and schemas[-1].leaf_type is not int:  # type: ignore[attr-defined]
            raise PathError("model: increment() needs a number")
        steps = self.resolve(steps)
        if op in ("delete", "discard"):
            self._remove(steps, op, args)
            return
        root = copy.deepcopy(self.root)
        if not steps:
            self.root = apply_write(op, self.root, args)
            return
        container = root if root is not ABSENT else new_container(schemas[0])
        top = container
        for index, step in enumerate(steps[:-1]):
            below = child(container, step)
            if below is ABSENT:
                below = new_container(schemas[index + 1])
                assign(container, step, below)
            container = below
        assign(container, steps[-1], apply_write(op, child(container, steps[-1]), args))
        self.root = top

    def _remove(self, steps: tuple, op: str, args: tuple) -> None:
        target = self.at(steps)
        if target is ABSENT:
            return
        if op == "discard":
            target.discard(args[0])
        elif not steps:
            self.root = {} if self.partitioned else ABSENT
        else:
            parent = self.at(steps[:-1])
            del parent[steps[-1]]


def child(value: Any, step: Any) -> Any:
    if isinstance(value, dict):
        return value.get(step, ABSENT)
    if isinstance(value, list) and 0 <= step < len(value):
        return value[step]
    return ABSENT


def new_container(schema: Schema) -> Any:
    return [] if isinstance(schema, List) else {}


def assign(container: Any, step: Any, value: Any) -> None:
    if isinstance(container, list) and not 0 <= step < len(container):
        raise PathError(f"model: index {step} out of range")
    container[step] = value


def apply_write(op: str, old: Any, args: tuple) -> Any:
    present = old is not ABSENT
    if op == "set":
        return copy.deepcopy(args[0])
    if op == "update":
        return args[0](copy.deepcopy(old) if present else args[1])
    if op == "increment":
        return (old if present else 0) + args[0]
    if op in ("append", "extend", "insert"):
        result = list(old) if present else []
        if op == "append":
            result.append(copy.deepcopy(args[0]))
        elif op == "extend":
            result.extend(copy.deepcopy(args[0]))
        else:
            result.insert(args[0], copy.deepcopy(args[1]))
        return result
    if op == "add":
        return (set(old) if present else set()) | {args[0]}
    assert op == "merge"
    return {**(old if present else {}), **copy.deepcopy(args[0])}


def model_pairs(schema: Any, value: Any, start: Any, stop: Any, limit: Any, reverse: bool) -> list:
    if value is ABSENT:
        return []
    keys = sorted(value)
    pairs = [(k, normalize(schema.value_schema, value[k]) if isinstance(schema, Map) else k) for k in keys
             if (start is None or k >= start) and (stop is None or k < stop)]
    pairs = pairs[::-1] if reverse else pairs
    return pairs if limit is None else pairs[:limit]


MODEL_READS = {
    "get": lambda schema, value, default: default if value is ABSENT else normalize(schema, value),
    "exists": lambda schema, value: value is not ABSENT,
    "size": lambda schema, value: 0 if value is ABSENT else len(value),
    "keys": lambda schema, value, start, stop, limit, reverse: [
        k for k, _ in model_pairs(schema, value, start, stop, limit, reverse)],
    "values": lambda schema, value, start, stop, limit, reverse: [
        v for _, v in model_pairs(schema, value, start, stop, limit, reverse)],
    "items": model_pairs,
    "slice": lambda schema, value, start, stop: [] if value is ABSENT else [
        normalize(schema.value_schema, v) for v in value[start:stop]],
    "contains": lambda schema, value, element: value is not ABSENT and element in value,
}


def normalize(schema: Schema, value: Any) -> Any:
    """The model's value in the order headwater promises: maps by key, records by declared field."""
    if isinstance(schema, Map):
        return {k: normalize(schema.value_schema, value[k]) for k in sorted(value)}
    if isinstance(schema, Record):
        return {name: normalize(field, value[name]) for name, field in schema.fields.items() if name in value}
    if isinstance(schema, List):
        return [normalize(schema.value_schema, v) for v in value]
    return value


def ordered(value: Any) -> Any:
    """A comparable form that also checks the order of dict keys."""
    if isinstance(value, dict):
        return ("dict", [(k, ordered(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return [ordered(v) for v in value]
    return value


# --- the test -----------------------------------------------------------------------------------


def outcome(fn: Any) -> Any:
    try:
        return ordered(fn())
    except (PathError, SchemaError) as e:
        return type(e).__name__


_pstate_ids = itertools.count(1)
# Raise for a deeper search, e.g. HEADWATER_LAYOUT_EXAMPLES=2000 pytest tests/pstate
EXAMPLES = int(os.environ.get("HEADWATER_LAYOUT_EXAMPLES", "40"))


@pytest.fixture(scope="module", params=["memory", "rocks"])
def shared_store(request, tmp_path_factory):
    # One store per module: each example uses fresh PState ids, whose key prefixes never overlap.
    store = MemoryStore() if request.param == "memory" else RocksStore(tmp_path_factory.mktemp("rocks") / "db")
    yield store
    store.close()


@pytest.mark.parametrize("family", FAMILIES)
# No shrinking: it takes minutes over random sequences; the failure message carries the history.
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data())
def test_every_layout_gives_the_models_results(shared_store, family, data):
    schemas = variants(family)
    partitioned = isinstance(schemas[0], Map)
    harnesses = [Harness(shared_store, schema, next(_pstate_ids), partitioned=partitioned) for schema in schemas]
    model, saved = Model(partitioned), Model(partitioned)
    draw = Draw(data)
    history: list = []
    for _ in range(draw.number(1, 60)):
        if draw.chance(10):
            keep = draw.chance(70)
            history.append("commit" if keep else "abort")
            for harness in harnesses:
                harness.commit() if keep else harness.abort()
            if keep:
                saved.root = copy.deepcopy(model.root)
            else:
                model.root = copy.deepcopy(saved.root)
        if draw.chance(15):
            check_navigators(draw, harnesses, model, schemas[0], partitioned, history)
            continue
        write = draw.chance(55)
        steps, path_schemas = draw.path(schemas[0], first_step=write and partitioned)
        schema = path_schemas[-1]
        op = draw.choice((WRITES_BY_KIND if write else READS_BY_KIND)[schema.kind])
        args, kwargs = draw_operation(draw, schema, op)
        history.append((steps, op, args, kwargs))
        if write:
            check_write(harnesses, model, path_schemas, steps, op, args, kwargs, history)
        else:
            expected = outcome(lambda: model.read(schema, steps, op, args, kwargs))
            for harness in harnesses:
                got = outcome(lambda: harness.layout.read(harness.txn, steps, op, args, kwargs))
                assert got == expected, failure(harness, history)


def check_write(harnesses: list, model: Model, path_schemas: list, steps: tuple, op: str, args: tuple,
                kwargs: dict, history: list) -> None:
    expected = outcome(lambda: model.write(path_schemas, steps, op, args, kwargs))
    for harness in harnesses:
        got = outcome(lambda: harness.layout.write(harness.txn, steps, op, args, kwargs))
        assert got == expected, failure(harness, history)
    expected = outcome(lambda: model.read(path_schemas[0], (), "get", (None,), {}))
    for harness in harnesses:
        assert outcome(lambda: harness.view.get()) == expected, failure(harness, history)


def check_navigators(draw: Draw, harnesses: list, model: Model, schema: Schema, partitioned: bool,
                     history: list) -> None:
    """select/transform: every layout must agree (the model learns the result afterwards)."""
    steps, path_schemas = draw.path(schema, first_step=partitioned)
    navs, end = draw_navigators(draw, path_schemas[-1])
    transform = draw.chance(50)
    op = draw_transform_op(draw, end) if transform else None
    history.append((steps, "transform" if transform else "select", navs, op))
    results = []
    for harness in harnesses:
        view = harness.view
        for step in steps:
            view = view[step]
        results.append(outcome(lambda: view.transform(*navs, op) if transform else view.select(*navs)))
        results.append(outcome(lambda: harness.view.get()))
        assert results[-2:] == results[:2], failure(harness, history)
    root = harnesses[0].view
    model.root = root.get() if root.exists() else ABSENT


def failure(harness: Harness, history: list) -> str:
    lines = "\n".join(f"  {entry}" for entry in history[-20:])
    return f"{harness.schema!r} differs from the model after (last 20 of {len(history)} operations):\n{lines}"
