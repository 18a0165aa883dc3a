"""A migrating PState reads the same whatever part of it was moved (property test).

Old data is written with the old layout; then a `MigratingLayout` reads it through the overlay,
after a random number of entries moved (and after a random write, which moves its entry first).
Every read must equal the read of the same PState written directly with the new schema.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.pstate import PStateLayout, Txn
from headwater.pstate.migrating import MigratingLayout
from headwater.schema import List, Map, Record, as_schema
from headwater.schema.shapes import schema_from_shape, schema_shape
from headwater.schema.types import migrated
from headwater.storage import MemoryStore
from tests.pstate.support import commit

OLD_ID, NEW_ID = 1, 2


def song(title: str) -> dict:
    return {"title": title.upper(), "length": len(title)}


def schemas(subindexed: bool) -> tuple:
    old = Map(str, Record(artist=str, songs=List(str, subindexed=subindexed)))
    new = Map(str, Record(artist=str, songs=List(migrated(Record(title=str, length=int), id="v2", fn=song),
                                                   subindexed=subindexed)))
    return old, new


def convert(value: dict) -> dict:
    out = dict(value)
    if "songs" in value:
        out["songs"] = [song(s) for s in value["songs"]]
    return out


names = st.text(alphabet="abcxyz", min_size=1, max_size=4)
albums = st.dictionaries(names, st.fixed_dictionaries({"artist": names, "songs": st.lists(names, max_size=4)}),
                         max_size=12)


def reads(layout: PStateLayout, reader, keys: list[str]) -> dict:
    found = {"size": layout.read(reader, (), "size"), "keys": layout.read(reader, (), "keys"),
             "reverse": layout.read(reader, (), "keys", (), {"reverse": True, "limit": 3}),
             "all": layout.read(reader, (), "get")}
    for key in keys:
        found[key] = layout.read(reader, (key,), "get")
        found[key + "/songs"] = layout.read(reader, (key, "songs"), "get")
        found[key + "/first"] = layout.read(reader, (key, "songs", 0), "get") if (found[key] or {}).get("songs") \
            else None
        found[key + "/n"] = layout.read(reader, (key, "songs"), "size")
    return found


@settings(max_examples=60, deadline=None)
@given(albums, st.booleans(), st.integers(0, 12), st.one_of(st.none(), st.tuples(names, names)))
def test_reads_during_a_migration_equal_reads_of_the_migrated_data(data, subindexed, moved, write):
    old_schema, new_schema = schemas(subindexed)
    store, expected_store = MemoryStore(), MemoryStore()
    old = PStateLayout(old_schema, OLD_ID, top_level_map_partitioned=True)
    txn = Txn(store.reader("pstate"))
    for key, value in data.items():
        old.write(txn, (key,), "set", (value,))
    commit(store, txn)
    # What the data must read as: the converted values, written with the new schema directly.
    direct = PStateLayout(as_schema(new_schema), NEW_ID, top_level_map_partitioned=True)
    expected_txn = Txn(expected_store.reader("pstate"))
    for key, value in data.items():
        direct.write(expected_txn, (key,), "set", (convert(value),))

    layout = MigratingLayout(new_schema, NEW_ID, top_level_map_partitioned=True,
                             old_schema=schema_from_shape(schema_shape(old_schema)), old_id=OLD_ID)
    txn = Txn(store.reader("pstate"))
    layout.begin(txn)
    layout.move_some(txn, moved)
    if write is not None:  # a write moves its entry first, then changes it
        key, artist = write
        layout.write(txn, (key, "artist"), "set", (artist,))
        direct.write(expected_txn, (key, "artist"), "set", (artist,))
    commit(store, txn)
    commit(expected_store, expected_txn)
    keys = sorted({*data, *((write[0],) if write else ())})
    during = reads(layout, store.reader("pstate"), keys)
    assert during == reads(direct, expected_store.reader("pstate"), keys)

    after: bytes | None = b""
    while after is not None:  # the rest, a few at a time and each batch committed, as a task does
        txn = Txn(store.reader("pstate"))
        after = layout.move_some(txn, 3, after=after or None)[1]
        commit(store, txn)
    assert reads(layout, store.reader("pstate"), keys) == during
    assert not list(store.reader("pstate").iterate(old.root.key[:-1], old.root.key[:-1] + b"\xff"))  # all moved
