"""Mirrors: a module uses another module's depots, PStates and queries by name."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import pytest

import headwater as hw
from tests.cluster.test_local_cluster import RECOVERY_S_MAX, Appenders, kill_worker
from tests.clusters import open_cluster
from tests.waiting import wait_for

WAIT_S = 30.0


@dataclass
class Registration:
    user: str
    name: str


@dataclass
class RegistrationV2:  # what registration's update adds: an optional field
    user: str
    name: str
    referrer: str | None = None


def registration_module(*, retention: hw.Retention | None = None, event_type: type = Registration,
                        with_users: bool = True) -> hw.Module:
    m = hw.Module("registration")
    registrations = m.depot("registrations", event_type, partition_by="user", retention=retention)
    users = m.pstate("users", hw.Map(str, str)) if with_users else None

    @m.stream(registrations)
    def register(ctx: hw.Context, r: Registration) -> None:
        if users is not None:
            ctx.pstate(users)[r.user].set(r.name)

    @m.query
    def user_count(ctx: hw.QueryContext) -> int:
        return sum(len(ctx.pstate("users", task=i).keys()) for i in range(ctx.num_tasks)) if with_users else 0

    return m


KEEP_ALL = None  # the mirror's copy keeps every record (the tests read it)


def welcome_module(*, start_from: str = "end", retention: hw.Retention | None = KEEP_ALL) -> hw.Module:
    m = hw.Module("welcome")
    signups = m.mirror_depot("registration", "registrations", retention=retention)
    users = m.mirror_pstate("registration", "users")
    count = m.mirror_query("registration", "user_count")
    greeted = m.pstate("greeted", hw.Map(str, hw.Record(times=int, name=str)))

    @m.stream(signups, start_from=start_from)
    def greet(ctx: hw.Context, r: Registration) -> None:
        entry = ctx.pstate(greeted)[r.user]
        entry["times"].increment()
        # The upstream's own topology may not have stored the name yet: it is not our batch.
        entry["name"].set(ctx.pstate(users)[r.user].get(r.name))

    @m.query
    def report(ctx: hw.QueryContext) -> dict:
        return {"users": ctx.query(count)(), "mirrored_name": ctx.pstate(users)["u0"].get(None)}

    return m


def greeted(cluster: hw.Cluster, n: int) -> dict[str, dict]:
    view = cluster.pstate("welcome", "greeted")
    return {f"u{i}": view[f"u{i}"].get(None) for i in range(n)}


def wait_greeted(cluster: hw.Cluster, n: int) -> dict[str, dict]:
    def all_greeted() -> dict[str, dict] | None:
        found = greeted(cluster, n)
        return found if all(found.values()) else None

    return wait_for(all_greeted, f"{n} users greeted", WAIT_S)


def test_a_topology_consumes_another_modules_depot_exactly_once_with_other_task_counts(cluster):
    cluster.deploy(registration_module(), tasks=3)
    cluster.deploy(welcome_module(), tasks=2)
    depot = cluster.depot("registration", "registrations")
    depot.append_many([Registration(f"u{i}", f"name {i}") for i in range(60)], ack="full")
    found = wait_greeted(cluster, 60)
    assert {user: entry["times"] for user, entry in found.items()} == {f"u{i}": 1 for i in range(60)}
    assert {entry["name"] for entry in found.values()} == {f"name {i}" for i in range(60)}
    # Three upstream partitions onto two: each mirror partition copies its share, in order.
    mirror = cluster.depot("welcome", "registration.registrations")
    assert mirror.partitions == 2
    assert sum(mirror.partition_info(p).end_offset for p in range(2)) == 60
    with pytest.raises(hw.HeadwaterError, match="append"):
        mirror.append(Registration("x", "y"))  # only the mirror appends to its copy
    assert cluster.query("welcome", "report")() == {"users": 60, "mirrored_name": "name 0"}


def test_a_mirror_starts_at_the_end_or_at_the_beginning(cluster):
    cluster.deploy(registration_module(), tasks=2)
    depot = cluster.depot("registration", "registrations")
    depot.append_many([Registration(f"u{i}", "before") for i in range(5)], ack="full")
    cluster.deploy(welcome_module(start_from="beginning"), tasks=1)
    assert all(entry["times"] == 1 for entry in wait_greeted(cluster, 5).values())
    cluster.destroy("welcome")
    cluster.deploy(welcome_module(), tasks=1)  # from the end: the five are not greeted
    depot.append(Registration("u5", "after"), ack="full")
    wait_for(lambda: cluster.pstate("welcome", "greeted")["u5"].get(None), "u5 greeted", WAIT_S)
    assert greeted(cluster, 5) == {f"u{i}": None for i in range(5)}


@pytest.mark.parametrize("tasks", [2, 3])
def test_a_copy_keeps_the_upstream_records_times(cluster, tasks):
    """Copied later, a record keeps the time it was appended upstream (its ctx.timestamp): exactly with
    the same task counts, and never going back within a partition when one copies several."""
    cluster.deploy(registration_module(), tasks=2)
    depot = cluster.depot("registration", "registrations")
    for i in range(12):
        depot.append(Registration(f"u{i}", "n"), ack="full")
    time.sleep(0.3)  # so that a copy's own time would differ
    cluster.deploy(welcome_module(start_from="beginning"), tasks=tasks)
    wait_greeted(cluster, 12)
    appended = {r.event.user: r.timestamp for p in range(2) for r in depot.read(p, 0)}
    copy = cluster.depot("welcome", "registration.registrations")
    copied = [[(r.event.user, r.timestamp) for r in copy.read(p, 0)] for p in range(tasks)]
    for records in copied:
        times = [at for _, at in records]
        assert times == sorted(times)
        assert all(appended[user] <= at < appended[user] + timedelta(seconds=0.3) for user, at in records)
        if tasks == 2:  # partition i is upstream partition i
            assert times == [appended[user] for user, _ in records]


def test_a_mirror_resumes_after_a_restart_without_repeating(tmp_path):
    path = tmp_path / "data"
    with hw.InProcessCluster(path) as cluster:
        cluster.deploy(registration_module(), tasks=2)
        cluster.deploy(welcome_module(), tasks=2)
        cluster.depot("registration", "registrations").append_many(
            [Registration(f"u{i}", "n") for i in range(20)], ack="full")
        wait_greeted(cluster, 20)
    with hw.InProcessCluster(path) as cluster:
        with pytest.raises(hw.DefinitionError, match="deploy 'registration' first"):
            cluster.deploy(welcome_module())
        cluster.deploy(registration_module())
        cluster.deploy(welcome_module())
        cluster.depot("registration", "registrations").append_many(
            [Registration(f"u{i}", "n") for i in range(20, 30)], ack="full")
        found = wait_greeted(cluster, 30)
        assert {entry["times"] for entry in found.values()} == {1}


def test_deploy_update_and_destroy_check_the_dependencies(cluster):
    with pytest.raises(hw.DefinitionError, match=r"module .welcome. mirrors .* of module .registration., which is "
                                                 "not deployed"):
        cluster.deploy(welcome_module())
    cluster.deploy(registration_module(with_users=False))
    with pytest.raises(hw.DefinitionError, match="no pstate named 'users' in module 'registration'"):
        cluster.deploy(welcome_module())
    cluster.update(registration_module())
    cluster.deploy(welcome_module())
    with pytest.raises(hw.DefinitionError, match="'registration' cannot be destroyed: module\\(s\\) 'welcome'"):
        cluster.destroy("registration")
    with pytest.raises(hw.DefinitionError, match="would lose pstate 'users' \\(mirrored by module 'welcome'\\)"):
        cluster.update(registration_module(with_users=False), delete=["users"])
    # A cycle: registration cannot come to mirror welcome, which mirrors it.
    cyclic = registration_module()
    cyclic.mirror_pstate("welcome", "greeted")
    with pytest.raises(hw.DefinitionError, match="cycle \\(registration -> welcome -> registration\\)"):
        cluster.update(cyclic)
    assert [(m, m.version) for m in cluster.modules()] == [("registration", 2), ("welcome", 1)]  # nothing changed
    cluster.destroy("welcome")
    cluster.destroy("registration")
    assert cluster.modules() == []


def test_mirrors_are_checked_where_they_are_declared():
    m = hw.Module("a")
    with pytest.raises(hw.DefinitionError, match="mirrors its own depot"):
        m.mirror_depot("a", "events")
    with pytest.raises(hw.DefinitionError):
        m.mirror_pstate("not a name!", "users")
    m.mirror_depot("b", "events")
    with pytest.raises(hw.DefinitionError, match=r"already has a depot named .b\.events."):
        m.mirror_depot("b", "events")
    m.mirror_depot("b", "events", name="events_again")
    m.mirror_query("c", "count")
    assert m.dependencies() == {"b": [("depot", "events")], "c": [("query", "count")]}


def test_an_update_of_the_upstream_keeps_its_mirrors_working(cluster):
    cluster.deploy(registration_module(), tasks=2)
    cluster.deploy(welcome_module(), tasks=1)
    depot = cluster.depot("registration", "registrations")
    depot.append_many([Registration(f"u{i}", "n") for i in range(5)], ack="full")
    wait_greeted(cluster, 5)
    assert cluster.update(registration_module(event_type=RegistrationV2)).version == 2
    depot.append_many([RegistrationV2(f"u{i}", "n", referrer="u0") for i in range(5, 10)], ack="full")
    found = wait_greeted(cluster, 10)
    assert {entry["times"] for entry in found.values()} == {1}


def test_by_default_the_copy_keeps_only_what_the_topologies_have_not_processed(cluster):
    cluster.deploy(registration_module(), tasks=1)
    m = hw.Module("welcome")
    signups = m.mirror_depot("registration", "registrations")
    seen = m.pstate("seen", hw.Map(str, int))

    @m.stream(signups)
    def see(ctx: hw.Context, r: Registration) -> None:
        ctx.pstate(seen)[r.user].increment()

    cluster.deploy(m, tasks=1)
    cluster.depot("registration", "registrations").append_many([Registration(f"u{i}", "n") for i in range(10)])
    copy = cluster.depot("welcome", "registration.registrations")
    wait_for(lambda: copy.partition_info(0).start_offset == 10, "the processed copies trimmed", WAIT_S)
    assert [cluster.pstate("welcome", "seen")[f"u{i}"].get() for i in range(10)] == [1] * 10
    assert len(cluster.depot("registration", "registrations").read(0)) == 10  # the log is the upstream's


def test_the_upstream_keeps_what_a_mirror_has_not_copied_whatever_its_retention(cluster):
    cluster.deploy(registration_module(retention=hw.Retention(max_records=0)), tasks=1)
    cluster.deploy(welcome_module(), tasks=1)
    depot = cluster.depot("registration", "registrations")
    depot.append_many([Registration(f"u{i}", "n") for i in range(5)], ack="full")
    wait_greeted(cluster, 5)
    wait_for(lambda: depot.partition_info(0).start_offset == 5, "the copied records trimmed", WAIT_S)
    cluster.pause("welcome", "registration.registrations")  # the mirror stops copying
    depot.append_many([Registration(f"u{i}", "n") for i in range(5, 15)], ack="full")
    time.sleep(2.5)  # two retention checks
    assert depot.partition_info(0).start_offset == 5  # processed upstream, but not copied: kept
    cluster.resume("welcome", "registration.registrations")
    wait_greeted(cluster, 15)
    wait_for(lambda: depot.partition_info(0).start_offset == 15, "the rest trimmed once copied", WAIT_S)
    cluster.pause("welcome", "registration.registrations")
    depot.append_many([Registration(f"u{i}", "n") for i in range(15, 20)], ack="full")
    cluster.destroy("welcome")  # a mirror that is gone holds nothing back
    wait_for(lambda: depot.partition_info(0).start_offset == 20, "trimmed once the mirror is gone", WAIT_S)


@pytest.mark.parametrize(("kind", "victim"), [("local", 0), ("local", 1), ("ray", 0)])
def test_a_mirror_copies_exactly_once_when_a_worker_dies(tmp_path, kind, victim):
    """SIGKILL a worker while appends flow upstream and the mirror copies them (worker 0 hosts the
    mirroring task, worker 1 only an upstream one): after its restart, every acked registration is
    in the mirror's copy once, and greeted once."""
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(registration_module(), tasks=2)
        cluster.deploy(welcome_module(), tasks=1)  # other task count: the copy picks keys out of both
        appenders = Appenders(cluster.depot("registration", "registrations"),
                              lambda event_id: Registration(f"u{event_id}", "n"), 3, "r",
                              time.monotonic() + RECOVERY_S_MAX, topology="register")
        appenders.wait_for(150)
        assert cluster.status()["welcome"][0]["worker"] == 0
        kill_worker(cluster, victim)
        before = len(appenders.acked)
        appenders.wait_for(before + 150)
        appenders.stop()
        users = {f"u{event_id}" for event_id in appenders.acked}
        assert len(users) >= before + 150, "the cluster did not serve again after the worker died"
        copy = cluster.depot("welcome", "registration.registrations")

        def copied() -> list[str] | None:
            found = [r.event.user for p in range(copy.partitions) for r in copy.read(p, 0, limit=1_000_000)]
            return found if users <= set(found) else None

        found = wait_for(copied, "every acked registration copied", RECOVERY_S_MAX)
        assert len(found) == len(set(found)), "a registration was copied twice"
        view = cluster.pstate("welcome", "greeted")
        wait_for(lambda: all(view[user]["times"].get(0) for user in found), "every copy greeted", RECOVERY_S_MAX)
        assert {view[user]["times"].get() for user in found} == {1}


def test_a_microbatch_topology_consumes_a_mirror_exactly_once(cluster):
    cluster.deploy(registration_module(), tasks=2)
    m = hw.Module("tally")
    signups = m.mirror_depot("registration", "registrations")
    seen = m.pstate("seen", hw.Map(str, int))

    @m.microbatch(signups)
    def tally(ctx: hw.Context, r: Registration) -> None:
        ctx.pstate(seen)[r.user].increment()  # the copy is partitioned by user here too: no hop

    cluster.deploy(m, tasks=3)
    cluster.depot("registration", "registrations").append_many(
        [Registration(f"u{i}", "abc"[i % 3]) for i in range(90)], ack="full")
    cluster.wait_for_microbatch("tally", "tally", processed=90, timeout=WAIT_S)
    view = cluster.pstate("tally", "seen")
    assert [view[f"u{i}"].get() for i in range(90)] == [1] * 90


def test_a_mirror_cannot_be_pointed_at_another_depot_by_an_update(cluster):
    cluster.deploy(registration_module(), tasks=1)
    other = hw.Module("other")
    other.depot("registrations", Registration)
    cluster.deploy(other)
    cluster.deploy(welcome_module())
    moved = welcome_module()
    del moved.depots["registration.registrations"]
    moved.mirror_depot("other", "registrations", name="registration.registrations")
    with pytest.raises(hw.DefinitionError, match=r"MirrorSource\(registration.registrations\) became "
                                                 r"MirrorSource\(other.registrations\)"):
        cluster.update(moved)


class _FailingOnce:
    """The upstream's clients, but the first read of `partition` is Unavailable (its task restarting)."""

    def __init__(self, peers: hw.Cluster, partition: int) -> None:
        self._peers = peers
        self._partition = partition
        self.failed = False

    def deployment(self, module: str):
        return self._peers.deployment(module)

    def depot(self, module: str, depot: str):
        real, test = self._peers.depot(module, depot), self

        class Depot:
            def __getattr__(self, name: str):
                return getattr(real, name)

            def read(self, partition: int, start: int, **options):
                if partition == test._partition and not test.failed:
                    test.failed = True
                    raise hw.Unavailable(f"task of partition {partition} restarting")
                return real.read(partition, start, **options)

        return Depot()


@pytest.mark.in_process_only("it reads through a stand-in for the clients of the mirroring task's process")
def test_a_read_that_fails_part_way_loses_nothing(cluster):
    """A mirror partition that copies two upstream partitions reads the first, then finds the second's
    task restarting: it reads both again from its stored position, dropping none of the first's."""
    from headwater.sources.mirror import MirrorReader

    cluster.deploy(registration_module(), tasks=2)
    cluster.deploy(welcome_module(), tasks=1)
    cluster.pause("welcome", "registration.registrations")
    depot = cluster.depot("registration", "registrations")
    depot.append_many([Registration(f"u{i}", "n") for i in range(20)], ack="full")
    upstream = [[r.event.user for r in depot.read(p, 0)] for p in range(2)]
    assert all(upstream), "both upstream partitions hold registrations"
    source = cluster.deployment("welcome").runtime.depots["registration.registrations"].decl.source
    peers = _FailingOnce(cluster, partition=1)
    reader = MirrorReader(source, peers, 0)
    try:
        rows = reader.read([0, 0], records_max=1000, wait_s=5.0)
    finally:
        reader.close()
    assert peers.failed
    assert sorted(row[1]["user"] for row in rows) == sorted(upstream[0] + upstream[1])
    assert rows[-1][0] == [len(upstream[0]), len(upstream[1])]
