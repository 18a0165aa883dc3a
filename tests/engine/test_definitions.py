"""Definition mistakes are caught early, with the offending name and the fix."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

import headwater as hw


@dataclass
class Event:
    key: int
    text: str = ""


@pytest.mark.parametrize("name", ["", "has space", "slash/name", 3, "ümlaut"])
def test_bad_names(name):
    with pytest.raises(hw.DefinitionError, match="not valid"):
        hw.Module(name)


def test_duplicates_and_unknown_references():
    m = hw.Module("m")
    m.depot("events", Event)
    with pytest.raises(hw.DefinitionError, match="already has a depot named 'events'"):
        m.depot("events", Event)
    with pytest.raises(hw.DefinitionError, match="did you mean 'events'"):
        @m.stream("event")
        def handler(ctx, e):
            pass
    with pytest.raises(hw.DefinitionError, match="did you mean 'key'"):
        m.depot("other", Event, partition_by="kye")
    with pytest.raises(hw.DefinitionError, match="partition_by has no meaning"):
        m.depot("single", Event, partition_by="key", partitioned=False)
    with pytest.raises(hw.DefinitionError, match="needs the depots"):
        @m.stream
        def no_depots(ctx, e):
            pass
    with pytest.raises(hw.DefinitionError, match="start_from"):
        m.stream("events", start_from="yesterday")
    with pytest.raises(hw.DefinitionError, match="Retry"):
        hw.Retry(times=-1)

    @m.stream("events")
    def first(ctx, e):
        pass

    with pytest.raises(hw.DefinitionError, match="already has a topology named 'first'"):
        @m.microbatch("events", name="first")
        def second(ctx, e):
            pass


def test_deploy_checks_the_whole_module(cluster):
    m = hw.Module("bad")
    events = m.depot("events", Event)

    @m.stream(events)
    def one_argument(ctx):
        pass

    with pytest.raises(hw.DefinitionError, match=r"must take \(ctx, event\)"):
        cluster.deploy(m)
    assert cluster.modules() == []
    with pytest.raises(hw.DefinitionError, match="already deployed"):
        good = hw.Module("good")
        cluster.deploy(good)
        cluster.deploy(good)
    with pytest.raises(hw.DefinitionError, match="tasks=0"):
        cluster.deploy(hw.Module("zero"), tasks=0)
    with pytest.raises(hw.DefinitionError, match="headwater.Module"):
        cluster.deploy("bank")  # type: ignore[arg-type]


def test_bad_schemas_name_the_pstate(cluster):
    with pytest.raises(hw.DefinitionError, match="object is not a supported PState leaf"):
        hw.Map(int, object)
    m = hw.Module("schemas")
    m.pstate("weird", object)
    with pytest.raises(hw.DefinitionError, match="weird"):
        cluster.deploy(m)


def test_a_handler_writing_a_wrong_value_writes_nothing(cluster):
    m = hw.Module("typed")
    events = m.depot("events", Event, partition_by="key")
    names = m.pstate("names", hw.Map(int, str))
    lengths = m.pstate("lengths", hw.Map(int, int))

    @m.stream(events)
    def store(ctx: hw.Context, e: Event) -> None:
        ctx.pstate(lengths)[e.key].set(len(e.text))
        ctx.pstate(names)[e.key].set(e.text if e.text != "bad" else 42)

    cluster.deploy(m, tasks=2)
    depot = cluster.depot("typed", "events")
    with pytest.raises(hw.HandlerError, match="SchemaError") as raised:
        depot.append(Event(1, "bad"))
    assert "expected" in raised.value.remote_traceback.lower()
    assert cluster.pstate("typed", "lengths")[1].get() is None
    depot.append(Event(1, "fine"))
    assert cluster.pstate("typed", "names")[1].get() == "fine"
    with pytest.raises(hw.ReadOnlyError, match="append an event"):
        cluster.pstate("typed", "names")[1].set("client write")
    with pytest.raises(hw.PathError, match="task=i"):
        cluster.pstate("typed", "names").size()
    assert cluster.pstate("typed", "names", task=hw_task(1, 2)).size() == 1


def hw_task(key: object, tasks: int) -> int:
    from headwater.schema import task_for_key

    return task_for_key(key, tasks)


def test_start_from_offsets_and_times(cluster):
    def module(start_from: object) -> hw.Module:
        m = hw.Module("late")
        events = m.depot("events", Event, partitioned=False)
        seen = m.pstate("seen", hw.List(int), partitioned=False)

        @m.stream(events)
        def note(ctx: hw.Context, e: Event) -> None:
            ctx.pstate(seen).append(e.key)

        @m.stream(events, name="later", start_from=start_from)
        def later(ctx: hw.Context, e: Event) -> None:
            pass

        return m

    cluster.deploy(module("end"))
    depot = cluster.depot("late", "events")
    depot.append_many([Event(i) for i in range(5)])
    middle = depot.read(0)[3].timestamp
    assert middle > dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    cluster.update(module({0: 2}))
    depot.append(Event(5))
    assert cluster.pstate("late", "seen").get() == [0, 1, 2, 3, 4, 5]


def test_destroy_removes_the_module_and_its_data(tmp_path):
    with hw.InProcessCluster(tmp_path) as cluster:
        m = hw.Module("gone")
        events = m.depot("events", Event)

        @m.stream(events)
        def noop(ctx: hw.Context, e: Event) -> None:
            pass

        cluster.deploy(m, tasks=2)
        depot = cluster.depot("gone", "events")
        depot.append(Event(1))
        cluster.destroy("gone")
        assert cluster.modules() == []
        assert not (tmp_path / "gone").exists()
        with pytest.raises(hw.Unavailable):
            depot.append(Event(2))
        with pytest.raises(hw.NotFound):
            cluster.destroy("gone")
        cluster.deploy(m, tasks=3)  # a fresh start: the task count may change
        assert cluster.depot("gone", "events").partition_info(0).end_offset == 0
