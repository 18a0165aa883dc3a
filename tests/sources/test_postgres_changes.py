"""hw.sources.PostgresChanges against a real PostgreSQL with wal_level=logical: inserts, updates and
deletes in commit order, typed columns, transactions larger than a read, lag, and exactly once across
a SIGKILL of the worker ingesting (the slot is advanced only to what the depot holds)."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

import headwater as hw
from tests import waiting
from tests.clusters import LOCAL_WORKERS

RECOVERY_S_MAX = 60


def module(dsn: str, publication: str) -> hw.Module:
    m = hw.Module("pg")
    m.external_depot("changes", hw.sources.PostgresChanges(dsn, publication), hw.sources.Change)
    return m


def wait_for(predicate, what: str, timeout_s: float = RECOVERY_S_MAX):
    return waiting.wait_for(predicate, what, timeout_s, poll_s=0.05)


def changes(cluster) -> list:
    depot = cluster.depot("pg", "changes")
    found, start = [], 0
    while batch := depot.read(0, start, limit=10_000):
        found += [r.event for r in batch]
        start = batch[-1].offset + 1
    return found


@pytest.fixture
def database(postgres_dsn, request):
    """A table `users` in a publication of its own (and no slot left from another test)."""
    import psycopg

    name = "p" + str(abs(hash(request.node.name)) % 10**8)
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS users")
        connection.execute("CREATE TABLE users (id int PRIMARY KEY, email text, active bool, score float8, "
                           "tags jsonb)")
        connection.execute(f"DROP PUBLICATION IF EXISTS {name}")
        connection.execute(f"CREATE PUBLICATION {name} FOR TABLE users")
        yield name
        connection.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                           "WHERE NOT active")


def test_changes_arrive_in_commit_order_with_typed_columns(postgres_dsn, database, cluster):
    import psycopg

    cluster.deploy(module(postgres_dsn, database), tasks=1)
    wait_for(lambda: cluster.status()["pg"][0]["sources"]["changes"]["lag"] is not None, "the slot")
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("""INSERT INTO users VALUES (1, 'ada@example.com', true, 1.5, '["a"]')""")
        with connection.transaction():
            connection.execute("UPDATE users SET email = 'ada@example.org' WHERE id = 1")
            connection.execute("INSERT INTO users SELECT g, 'u' || g, false, g, NULL FROM generate_series(2, 2500) g")
        connection.execute("DELETE FROM users WHERE id = 2")
    found = wait_for(lambda: (c := changes(cluster)) and len(c) == 2502 and c, "every change")
    first = found[0]
    assert (first.table, first.op, first.row) == ("public.users", "insert", {
        "id": 1, "email": "ada@example.com", "active": True, "score": 1.5, "tags": ["a"]})
    assert (found[1].op, found[1].row["email"]) == ("update", "ada@example.org")
    assert [c.row["id"] for c in found[2:2501]] == list(range(2, 2501)) and found[2].xid == found[1].xid
    assert (found[-1].op, found[-1].row) == ("delete", {"id": 2})
    lsns = [c.lsn for c in found]
    assert lsns[1] == lsns[2500] != lsns[0]  # one transaction, larger than a read: one commit position
    wait_for(lambda: cluster.status()["pg"][0]["sources"]["changes"]["position"][0] > 0, "the position")
    assert "PostgresChanges(127.0.0.1" in cluster.status()["pg"][0]["sources"]["changes"]["source"]


def test_a_change_has_its_commits_time(postgres_dsn, database, cluster):
    """Ingested later (the depot paused), each change keeps the time its transaction committed."""
    import psycopg

    cluster.deploy(module(postgres_dsn, database), tasks=1)
    wait_for(lambda: cluster.status()["pg"][0]["sources"]["changes"]["lag"] is not None, "the slot")
    cluster.pause("pg", "changes")
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        before = datetime.now(UTC)
        with connection.transaction():
            connection.execute("INSERT INTO users VALUES (1, 'a', true, 0, NULL), (2, 'b', true, 0, NULL)")
        connection.execute("INSERT INTO users VALUES (3, 'c', true, 0, NULL)")
        committed = datetime.now(UTC)
    time.sleep(0.5)
    resumed = datetime.now(UTC)
    cluster.resume("pg", "changes")
    wait_for(lambda: len(changes(cluster)) == 3, "the changes")
    times = [r.timestamp for r in cluster.depot("pg", "changes").read(0, 0)]
    assert times[0] == times[1] <= times[2]  # one transaction, one commit time
    assert all(before - timedelta(seconds=0.1) <= at <= committed + timedelta(seconds=0.1) < resumed for at in times)


def test_a_missing_publication_is_reported_and_then_found(postgres_dsn, database, cluster):
    import psycopg

    cluster.deploy(module(postgres_dsn, "nothere"), tasks=1)
    error = wait_for(lambda: cluster.status()["pg"][0]["sources"]["changes"]["error"], "the error")
    assert "no publication 'nothere'" in error and "CREATE PUBLICATION" in error
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("CREATE PUBLICATION nothere FOR TABLE users")
        wait_for(lambda: cluster.status()["pg"][0]["sources"]["changes"]["error"] is None, "the slot", 40)
        connection.execute("INSERT INTO users VALUES (9, 'z', true, 0, NULL)")
        wait_for(lambda: [c.row["id"] for c in changes(cluster)] == [9], "the insert")
        connection.execute("DROP PUBLICATION nothere")


def test_ingestion_is_exactly_once_when_the_worker_ingesting_is_killed(tmp_path, postgres_dsn, database):
    import psycopg

    total = 20_000
    with hw.LocalCluster(tmp_path / "data", workers=LOCAL_WORKERS) as cluster:
        cluster.deploy(module(postgres_dsn, database), tasks=1)
        wait_for(lambda: cluster.status()["pg"][0]["sources"]["changes"]["lag"] is not None, "the slot")
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            for start in range(0, total, 500):  # 40 transactions
                connection.execute("INSERT INTO users SELECT g, 'u', true, 0, NULL FROM generate_series(%s::int, %s::int) g",
                                   (start, start + 499))
        depot = cluster.depot("pg", "changes")
        for kill_at in (3_000, 11_000):
            wait_for(lambda: depot.partition_info(0).end_offset >= kill_at, "ingestion")
            os.kill(cluster.status()["pg"][0]["pid"], signal.SIGKILL)
            wait_for(lambda: all(t["up"] for t in cluster.status()["pg"]), "the worker's restart")
        wait_for(lambda: depot.partition_info(0).end_offset >= total, "every change")
        time.sleep(0.5)
        assert [c.row["id"] for c in changes(cluster)] == list(range(total))
