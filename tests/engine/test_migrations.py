"""PState migrations: a declared schema change applies on read at once, and the stored data is
rewritten in the background, resuming after a restart.

The main example ports Rama's MusicCatalogModule migration: an album's songs, stored as strings,
become records with their featured artists.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pytest

import headwater as hw
from tests.clusters import ALL_KINDS, CLUSTER_KINDS, open_cluster


@dataclass
class Album:
    name: str
    artist: str
    songs: list[str]


def catalog_v1() -> hw.Module:
    m = hw.Module("music")
    albums_in = m.depot("albums", Album, partition_by="name")
    albums = m.pstate("albums", hw.Map(str, hw.Record(artist=str, songs=hw.List(str))))

    @m.stream(albums_in)
    def add_album(ctx, album: Album) -> None:
        ctx.pstate(albums)[album.name].set({"artist": album.artist, "songs": album.songs})

    return m


_FEATURING = re.compile(r"^(?P<title>.*?) \(feat\. (?P<artists>.*)\)$")


def song_record(title: str) -> dict:
    """'Song (feat. A & B)' -> {"title": "Song", "featured": ["A", "B"]}; idempotent on records."""
    if isinstance(title, dict):
        return title
    found = _FEATURING.match(title)
    if found is None:
        return {"title": title, "featured": []}
    return {"title": found["title"], "featured": found["artists"].split(" & ")}


SONG = hw.Record(title=str, featured=hw.List(str))


def slow_song_record(title: str) -> dict:
    time.sleep(0.001)  # a conversion that takes a while: the rewrite lasts seconds
    return song_record(title)


def catalog_v2(*, slow: bool = False) -> hw.Module:
    m = hw.Module("music")
    albums_in = m.depot("albums", Album, partition_by="name")
    songs = hw.migrated(SONG, id="songs-as-records", fn=slow_song_record if slow else song_record)
    albums = m.pstate("albums", hw.Map(str, hw.Record(artist=str, songs=hw.List(songs))))

    @m.stream(albums_in)
    def add_album(ctx, album: Album) -> None:
        ctx.pstate(albums)[album.name].set({"artist": album.artist, "songs": [song_record(s) for s in album.songs]})

    @m.query
    def featured_on(ctx, album: str) -> list[str]:
        found = ctx.pstate(albums)[album]["songs"].get() or []
        return sorted({artist for song in found for artist in song["featured"]})

    return m


def album(i: int) -> Album:
    return Album(f"album-{i:04}", f"artist-{i % 7}", [f"song {i}-{j}" + (" (feat. A & B)" if j == 1 else "")
                                                       for j in range(3)])


def expected(i: int) -> dict:
    return {"artist": f"artist-{i % 7}", "songs": [song_record(s) for s in album(i).songs]}


def wait_done(cluster: hw.InProcessCluster, module: str, timeout_s: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = cluster.migrations(module)
        if all(row["done"] for row in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_music_catalog_songs_become_records_on_read_at_once_and_on_disk_in_the_background(tmp_path, kind):
    count = 300
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(catalog_v1(), tasks=2)
        cluster.depot("music", "albums").append_many([album(i) for i in range(count)])
        albums = cluster.pstate("music", "albums")

        assert cluster.update(catalog_v2()).version == 2
        albums = cluster.pstate("music", "albums")  # a view checks paths with the schema it was made with
        # Every read sees the new schema at once, whatever the rewrite has reached.
        assert albums[album(1).name].get() == expected(1)
        assert albums[album(2).name]["songs"][1]["featured"].get() == ["A", "B"]
        assert sum(cluster.pstate("music", "albums", task=t).size() for t in range(2)) == count
        assert cluster.query("music", "featured_on")(album(5).name) == ["A", "B"]
        # A write to an entry not rewritten yet: the whole entry moves first, nothing is lost.
        cluster.depot("music", "albums").append(Album(album(7).name, "new-artist", ["solo"]))
        assert albums[album(7).name].get() == {"artist": "new-artist", "songs": [{"title": "solo", "featured": []}]}

        rows = wait_done(cluster, "music")
        assert rows == [{"kind": "pstate", "name": "albums", "ids": ["songs-as-records"], "version": 2, "moved": count,
                         "total": count, "done": True}]
        for i in (0, 1, 150, count - 1):
            assert albums[album(i).name].get() == expected(i)
        assert albums[album(7).name]["artist"].get() == "new-artist"

    with open_cluster(kind, tmp_path / "data") as cluster:  # after a restart, the new schema is stored
        cluster.deploy(catalog_v2())
        assert cluster.migrations("music") == []
        assert cluster.pstate("music", "albums")[album(3).name].get() == expected(3)


def test_a_read_during_a_migration_equals_the_same_read_after_it(cluster):
    cluster.deploy(catalog_v1(), tasks=2)
    cluster.depot("music", "albums").append_many([album(i) for i in range(120)])
    albums = cluster.pstate("music", "albums")
    reads = {
        "one": lambda: albums[album(9).name].get(),
        "song": lambda: albums[album(9).name]["songs"][1].get(),
        "titles": lambda: albums[album(3).name].select("songs", hw.ALL, "title"),
        "keys": lambda: [cluster.pstate("music", "albums", task=t).keys(limit=500) for t in range(2)],
        "sizes": lambda: [cluster.pstate("music", "albums", task=t).size() for t in range(2)],
    }
    cluster.update(catalog_v2())
    albums = cluster.pstate("music", "albums")
    during = {name: read() for name, read in reads.items()}
    wait_done(cluster, "music")
    after = {name: read() for name, read in reads.items()}
    assert during == after
    assert during["one"] == expected(9) and sum(during["sizes"]) == 120


def test_a_migration_is_declared_or_refused(cluster):
    cluster.deploy(catalog_v1(), tasks=1)
    undeclared = catalog_v1()
    undeclared.pstates.clear()
    undeclared.pstate("albums", hw.Map(str, hw.Record(artist=str, songs=hw.List(SONG))))
    with pytest.raises(hw.DefinitionError, match="hw.migrated"):
        cluster.update(undeclared)
    with pytest.raises(hw.DefinitionError, match="fn must be a function"):
        hw.migrated(SONG, id="x", fn=3)
    with pytest.raises(hw.DefinitionError, match="non-empty string"):
        hw.migrated(SONG, id="", fn=song_record)


def test_a_migration_under_load_resumes_after_its_worker_is_killed(tmp_path):
    """SIGKILL a worker in the middle of the rewrite while albums keep arriving: the rewrite resumes
    from its last committed round, and every album reads as the oracle says, during and after."""
    from tests.cluster.test_local_cluster import kill_worker

    count = 2_000
    with hw.LocalCluster(tmp_path / "data", workers=2) as cluster:
        cluster.deploy(catalog_v1(), tasks=2)
        albums_in = cluster.depot("music", "albums")
        for start in range(0, count, 500):
            albums_in.append_many([album(i) for i in range(start, start + 500)])
        cluster.update(catalog_v2(slow=True))
        albums = cluster.pstate("music", "albums")
        assert albums[album(1999).name].get() == expected(1999)
        deadline = time.monotonic() + 60
        while (progress := cluster.migrations("music")[0])["moved"] < 300:
            assert time.monotonic() < deadline, progress
            time.sleep(0.02)
        assert not progress["done"], "the rewrite should still be running when the worker dies"
        kill_worker(cluster, 1)
        late = []
        for i in range(count, count + 100):  # appends during the restart and the rest of the rewrite
            for _ in range(300):
                try:
                    albums_in.append(album(i), idempotency_key=f"late-{i}")
                    break
                except hw.Unavailable:
                    time.sleep(0.05)
            late.append(i)
        rows = wait_done(cluster, "music", timeout_s=120)
        assert rows[0]["done"] and rows[0]["total"] == count
        for i in [*range(0, count, 97), *late]:
            assert albums[album(i).name].get() == expected(i), i
        assert sum(cluster.pstate("music", "albums", task=t).size() for t in range(2)) == count + len(late)


def test_migrations_show_over_http_and_in_status_until_done(cluster):
    from tests.server.support import served

    cluster.deploy(catalog_v1(), tasks=2)
    cluster.depot("music", "albums").append_many([album(i) for i in range(300)])
    cluster.update(catalog_v2(slow=True))
    with served(cluster) as url, hw.connect(url) as remote:
        [row] = remote.migrations("music")
        assert (row["kind"], row["name"], row["ids"], row["version"], row["total"]) == (
            "pstate", "albums", ["songs-as-records"], 2, 300)
        assert remote.stats()["modules"][0]["migrations"][0]["name"] == "albums"
        wait_done(cluster, "music")
        assert remote.migrations("music") == []  # finished: the catalog keeps only the new schema
    cluster.update(catalog_v2())  # the same declaration again starts nothing new
    assert cluster.migrations("music") == [] and cluster.modules()[0].version == 3


@dataclass
class AlbumV2:
    name: str
    artists: list[str]
    songs: list[str]


def album_v2(old: dict) -> AlbumV2:
    return AlbumV2(old["name"], old["artist"].split(" & "), old["songs"])


def catalog_v3(*, with_backfill: bool = True) -> hw.Module:
    """The album depot's events become AlbumV2; a new topology backfills from every stored album."""
    m = hw.Module("music")
    albums_in = m.depot("albums", hw.migrated(AlbumV2, id="albums-v2", fn=album_v2), partition_by="name")
    songs = hw.migrated(SONG, id="songs-as-records", fn=song_record)
    albums = m.pstate("albums", hw.Map(str, hw.Record(artist=str, songs=hw.List(songs))))
    artists = m.pstate("artists", hw.Map(str, str))  # the first artist of each album, by album

    @m.stream(albums_in)
    def add_album(ctx, album: AlbumV2) -> None:
        assert isinstance(album, AlbumV2)
        ctx.pstate(albums)[album.name].set({"artist": " & ".join(album.artists),
                                            "songs": [song_record(s) for s in album.songs]})

    if with_backfill:
        @m.stream(albums_in, start_from="beginning")
        def count_artists(ctx, album: AlbumV2) -> None:
            assert isinstance(album, AlbumV2), album
            ctx.pstate(artists)[album.name].set(album.artists[0])  # keyed like the depot: on this task

    return m


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_a_depot_event_type_migrates_on_read_at_once_and_on_disk_in_the_background(tmp_path, kind):
    count = 300
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(catalog_v1(), tasks=2)
        depot = cluster.depot("music", "albums")
        depot.append_many([album(i) for i in range(count)])
        cluster.update(catalog_v2())
        wait_done(cluster, "music")
        with pytest.raises(hw.DefinitionError, match="hw.migrated\\(NewType"):
            bare = catalog_v3()
            bare.depots["albums"].migration = None
            cluster.update(bare)
        cluster.update(catalog_v3())
        depot = cluster.depot("music", "albums")
        old = [r.event for p in range(2) for r in depot.read(p)]
        assert len(old) == count and all(isinstance(e, AlbumV2) for e in old)
        assert sorted(e.name for e in old) == [album(i).name for i in range(count)]
        assert depot.append(AlbumV2("new", ["x", "y"], ["only (feat. z)"]))["add_album"] is None
        rows = wait_done(cluster, "music")
        assert [(r["kind"], r["name"], r["ids"], r["total"], r["done"]) for r in rows] == [
            ("depot", "albums", ["albums-v2"], count, True)]
        artists = cluster.pstate("music", "artists")
        deadline = time.monotonic() + 30
        while artists[album(count - 1).name].get() is None:  # the backfill went through every album
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [artists[album(i).name].get() for i in range(0, count, 50)] == [
            f"artist-{i % 7}" for i in range(0, count, 50)]
        assert artists["new"].get() == "x"
        assert all(cluster.dead_letters("music", t) == [] for t in ("add_album", "count_artists"))
    with open_cluster(kind, tmp_path / "data") as cluster:
        # After a restart nothing converts on read any more: every stored event was rewritten.
        cluster.deploy(catalog_v3())
        assert cluster.migrations("music") == []
        events = [r.event for p in range(2) for r in cluster.depot("music", "albums").read(p)]
        assert len(events) == count + 1 and all(isinstance(e, AlbumV2) for e in events)
