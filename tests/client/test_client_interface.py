"""The client interface behaves the same in process and over HTTP: results, values and typed errors.

Every test runs twice (`client` is parametrized over `in_process` and `remote`); both share one
cluster, so each test uses keys of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import datetime, timezone

import pytest

import headwater as hw
import headwater.pstate as nav
from examples.bank import Deposit, Transfer
from examples.orders import Address, LineItem, NewOrder
from examples.registration import UserSignUp
from tests.server.support import FIXED, Job

_keys = itertools.count(1000)


def fresh_key() -> int:
    return next(_keys)


def end_offsets(client, module: str, depot: str) -> list[int]:
    target = client.depot(module, depot)
    return [target.partition_info(p).end_offset for p in range(target.partitions)]


# ---- appends --------------------------------------------------------------------------------------


def test_full_ack_returns_each_topologys_result(client):
    user = fresh_key()
    result = client.depot("bank", "deposits").append(Deposit(user, 70))
    assert result["deposit"] == 70
    assert result.results == {"deposit": 70}
    assert 0 <= result.partition < 2 and result.offset >= 0


def test_a_hop_tree_completes_before_the_full_ack(client):
    a, b = fresh_key(), fresh_key()
    client.depot("bank", "deposits").append(Deposit(a, 100))
    assert client.depot("bank", "transfers").append(Transfer(f"t{a}", a, b, 30))["transfer"] is True
    funds = client.pstate("bank", "funds")
    assert (funds[a].get(), funds[b].get()) == (70, 30)


def test_append_ack_returns_where_the_event_landed_without_results(client):
    result = client.depot("bank", "deposits").append(Deposit(fresh_key(), 1), ack=hw.Ack.APPEND)
    assert result.results == {} and result.offset >= 0


def test_no_ack_returns_none(client):
    assert client.depot("bank", "deposits").append(Deposit(fresh_key(), 1), ack="none") is None


def test_a_repeated_idempotency_key_appends_nothing(client):
    depot = client.depot("jobs", "jobs")
    key, name = fresh_key(), f"idem-{uuid.uuid4()}"
    first = depot.append(Job(key), idempotency_key=name)
    before = end_offsets(client, "jobs", "jobs")
    again = depot.append(Job(key), idempotency_key=name)
    assert (again.partition, again.offset, again.results) == (first.partition, first.offset, first.results)
    assert end_offsets(client, "jobs", "jobs") == before


def test_an_idempotency_key_reused_for_another_event_conflicts(client):
    depot, name = client.depot("jobs", "jobs"), f"idem-{uuid.uuid4()}"
    key = fresh_key()
    depot.append(Job(key), idempotency_key=name)
    with pytest.raises(hw.IdempotencyConflict, match="different event"):
        depot.append(Job(key, tag="other"), idempotency_key=name)


def test_a_bad_event_is_a_schema_error_naming_the_field_and_appends_nothing(client):
    before = end_offsets(client, "bank", "deposits")
    with pytest.raises(hw.SchemaError, match="user_id") as caught:
        client.depot("bank", "deposits").append({"user_id": "one", "amount": 5})
    assert caught.value.path == "$.user_id"
    assert end_offsets(client, "bank", "deposits") == before


def test_a_depot_closed_to_clients_refuses_appends(client):
    with pytest.raises(hw.PermissionDenied, match="client_appends=False"):
        client.depot("jobs", "internal").append(Job(1))


def test_append_many_returns_results_in_order(client):
    keys = [fresh_key() for _ in range(5)]
    results = client.depot("jobs", "jobs").append_many([Job(k) for k in keys])
    assert [r["work"] for r in results] == [k * 2 for k in keys]


@pytest.mark.parametrize("ack", ["full", "append", "none"])
def test_a_batch_with_one_unencodable_event_appends_nothing(client, ack):
    # 2**70 passes JSON decoding and the type check (an int) but no 64-bit encoding: found before any append.
    keys = [fresh_key() for _ in range(4)]
    events = [Job(keys[0]), Job(keys[1]), Job(2**70), Job(keys[3])]
    before = end_offsets(client, "jobs", "jobs")
    with pytest.raises(hw.SchemaError, match="event 2 of the batch") as caught:
        client.depot("jobs", "jobs").append_many(events, ack=ack)
    assert caught.value.path.startswith("$[2]")
    assert end_offsets(client, "jobs", "jobs") == before
    with pytest.raises(hw.SchemaError, match="event 2 of the batch"):
        asyncio.run(client.depot("jobs", "jobs").append_many_async(events, ack=ack))
    assert end_offsets(client, "jobs", "jobs") == before


def test_append_many_async(client):
    keys = [fresh_key() for _ in range(3)]
    results = asyncio.run(client.depot("jobs", "jobs").append_many_async([Job(k) for k in keys]))
    assert [r["work"] for r in results] == [k * 2 for k in keys]


def test_append_acks_leave_no_reply_waiter_behind(client, backend):
    cluster = backend[0]
    router = cluster._deployments["jobs"].router
    depot = client.depot("jobs", "jobs")
    for _ in range(50):
        depot.append(Job(fresh_key()), ack="append")
    depot.append_many([Job(fresh_key()) for _ in range(50)], ack="append")
    asyncio.run(depot.append_async(Job(fresh_key()), ack="append"))
    assert len(router._waiters) == 0


def test_append_async(client):
    key = fresh_key()
    result = asyncio.run(client.depot("jobs", "jobs").append_async(Job(key)))
    assert result["work"] == key * 2


def test_an_ack_timeout_says_where_the_durable_event_is(client):
    depot, key = client.depot("jobs", "jobs"), fresh_key()
    depot.append(Job(key))  # the task is past any nap an earlier test left it, so 0.1 s is enough to be durable
    with pytest.raises(hw.AckTimeout, match="durable") as caught:
        depot.append(Job(key, nap_s=0.3), timeout=0.1)
    assert caught.value.partition is not None and caught.value.offset is not None
    record = depot.read(caught.value.partition, caught.value.offset, caught.value.offset + 1)
    assert record and record[0].event.nap_s == 0.3


# ---- handler errors and dead letters -------------------------------------------------------------------


def test_a_raising_handler_gives_handler_error_and_a_dead_letter_that_retries(client):
    key = fresh_key()
    FIXED["jobs"] = False
    with pytest.raises(hw.HandlerError, match="failed on purpose") as caught:
        client.depot("jobs", "jobs").append(Job(key, fail=True))
    error = caught.value
    assert error.topology == "work" and error.error_type == "ValueError"
    assert "failed on purpose" in error.remote_traceback and "Traceback" in error.remote_traceback
    letters = [d for d in client.dead_letters("jobs", "work") if (d.partition, d.offset) == (error.partition, error.offset)]
    assert len(letters) == 1 and letters[0].error_type == "ValueError" and letters[0].kind == "record"
    assert letters[0].depot == "jobs" and letters[0].event == Job(key, fail=True)  # the record that failed
    with pytest.raises(hw.HandlerError):
        letters[0].retry()  # still failing: it stays a dead letter
    FIXED["jobs"] = True
    try:
        assert letters[0].retry() == key * 2
    finally:
        FIXED["jobs"] = False
    assert all(d.id != letters[0].id for d in client.dead_letters("jobs", "work"))
    assert client.pstate("jobs", "done")[key].get() == 1


# ---- PState reads -------------------------------------------------------------------------------------


def test_reads_at_a_path(client):
    email = f"u{fresh_key()}@example.com"
    client.depot("registration", "registrations").append(UserSignUp(email, "h1", 1_700_000_000_000))
    users = client.pstate("registration", "users")
    assert users[email].get() == {"pwd_hash": "h1", "registered_ms": 1_700_000_000_000}
    assert users[email]["pwd_hash"].get() == "h1"
    assert users[email].exists() is True and users[email].size() == 2
    assert users["nobody@example.com"].get() is None
    assert users["nobody@example.com"].get("fallback") == "fallback"
    assert users["nobody@example.com"].exists() is False


def test_typed_values_come_back_in_their_declared_types(client):
    order_id, product = uuid.uuid4(), uuid.uuid4()
    order = NewOrder(order_id, uuid.uuid4(), [LineItem(product, 2, 500)], Address("1 Main St", "Springfield", "IL", "62701"))
    assert client.depot("orders", "new_orders").append(order)["new_order"] == 1000
    orders = client.pstate("orders", "orders")
    assert orders[order_id]["shipping"].get() == order.shipping
    assert orders[order_id]["items"][0].get() == LineItem(product, 2, 500)
    assert orders[order_id]["items"].size() == 1
    assert orders[order_id]["customer_id"].get() == order.customer_id


def test_ranges_over_maps_sets_and_lists(client):
    key = fresh_key()
    at = [datetime(2025, 1, d, tzinfo=timezone.utc) for d in (3, 1, 2)]
    client.depot("jobs", "jobs").append_many([Job(key, tag=t, at=when) for t, when in zip("cab", at)])
    seen = client.pstate("jobs", "seen")[key]
    assert seen.keys() == sorted(at)
    assert seen.keys(reverse=True, limit=2) == sorted(at, reverse=True)[:2]
    assert seen.items(at[2], None) == [(at[2], "b"), (at[0], "c")]
    assert seen.values(None, at[2]) == ["a"]
    assert seen[at[1]].get() == "a"
    tags = client.pstate("jobs", "tags")[key]
    assert tags.contains("b") is True and tags.contains("z") is False
    assert tags.keys("b") == ["b", "c"]
    log = client.pstate("jobs", "log")[key]
    assert log.size() == 3 and log.slice(1, None) == log.get()[1:] and log.slice(-1) == log.get()[-1:]


def test_a_whole_map_needs_a_task(client):
    with pytest.raises(hw.PathError, match="task=i"):
        client.pstate("bank", "funds").keys()
    everywhere = client.pstate("bank", "funds", task=0).keys() + client.pstate("bank", "funds", task=1).keys()
    assert sorted(everywhere) == sorted(set(everywhere)) and everywhere


def test_a_per_task_pstate_is_read_with_task(client):
    client.depot("registration", "registrations").append(UserSignUp(f"t{fresh_key()}@example.com", "h", 1_700_000_000_000))
    counts = [client.pstate("registration", "signups", task=t)["by_day"]["2023-11-14"].get(0) for t in range(2)]
    assert sum(counts) >= 1


def test_a_path_that_does_not_fit_the_schema_is_a_path_error(client):
    with pytest.raises(hw.PathError, match="does not fit"):
        client.pstate("bank", "funds")["one"].get()
    with pytest.raises(hw.PathError, match="no field"):
        client.pstate("registration", "users")["a@example.com"]["nope"].get()
    with pytest.raises(hw.PathError, match="applies to"):
        client.pstate("bank", "funds")[1].keys()


def test_views_are_read_only(client):
    with pytest.raises(hw.ReadOnlyError, match="append an event"):
        client.pstate("bank", "funds")[1].set(5)


def test_a_task_that_does_not_exist(client):
    with pytest.raises(ValueError, match="does not exist"):
        client.pstate("bank", "funds", task=9)


# ---- queries --------------------------------------------------------------------------------------------


def test_queries(client):
    assert client.query("jobs", "double")(21) == 42
    assert client.query("jobs", "double")(n=4) == 8
    assert client.query("bank", "total_funds")() >= 0


def test_a_query_argument_of_the_wrong_type_is_a_schema_error(client):
    with pytest.raises(hw.SchemaError, match="'n'"):
        client.query("jobs", "double")("x")
    with pytest.raises(hw.SchemaError, match="missing"):
        client.query("jobs", "double")()


def test_a_raising_query_is_a_handler_error(client):
    with pytest.raises(hw.HandlerError, match="exploded") as caught:
        client.query("jobs", "explode")()
    assert "RuntimeError" in caught.value.remote_traceback


# ---- reading depots -------------------------------------------------------------------------------------


def test_depot_read_and_partition_info(client):
    depot = client.depot("jobs", "jobs")
    result = depot.append(Job(fresh_key(), tag="read-me"))
    info = depot.partition_info(result.partition)
    assert info.partition == result.partition and info.end_offset > result.offset and info.start_offset == 0
    [record] = depot.read(result.partition, result.offset, result.offset + 1)
    assert record.event == Job(record.event.key, tag="read-me") and record.offset == result.offset
    assert record.timestamp.tzinfo is not None
    with pytest.raises(ValueError, match="partitions 0..1"):
        depot.read(7)
    first_two = depot.read(result.partition, 0, limit=2)
    assert depot.read(result.partition, -3, limit=2) == first_two and len(first_two) == min(2, info.end_offset)


def test_tail_follows_new_records(client):
    depot = client.depot("jobs", "jobs")
    key = fresh_key()
    follower = depot.tail(poll_s=0.01, idle_timeout_s=2.0)
    depot.append(Job(key, tag="tailed"))
    record = next(follower)
    assert record.event.key == key
    follower.close()


# ---- names ------------------------------------------------------------------------------------------------


def test_unknown_names_are_not_found_with_a_suggestion(client):
    with pytest.raises(hw.NotFound, match="did you mean 'bank'"):
        client.depot("bnak", "deposits")
    with pytest.raises(hw.NotFound, match="did you mean 'deposits'"):
        client.depot("bank", "deposit")
    with pytest.raises(hw.NotFound, match="did you mean 'funds'"):
        client.pstate("bank", "fund")
    with pytest.raises(hw.NotFound, match="did you mean 'total_funds'"):
        client.query("bank", "total_fund")
    with pytest.raises(hw.NotFound, match="did you mean 'transfer'"):
        client.dead_letters("bank", "transfr")


def test_modules(client):
    assert client.modules() == ["bank", "jobs", "orders", "registration"]


# ---- select with navigators (once headwater.pstate has them) ----------------------------------------

@pytest.mark.skipif(not hasattr(nav, "MAP_VALS"), reason="navigators are not built yet")
def test_select_with_navigators(client):
    a, b = fresh_key(), fresh_key()
    client.depot("bank", "deposits").append(Deposit(a, 100))
    transfers = client.depot("bank", "transfers")
    transfers.append(Transfer(f"s{a}-1", a, b, 10))
    transfers.append(Transfer(f"s{a}-2", a, b, 20))
    outgoing = client.pstate("bank", "outgoing")
    assert outgoing.select(a, nav.MAP_VALS, "amount") == [10, 20]
    assert outgoing.select(a, nav.MAP_KEYS) == [f"s{a}-1", f"s{a}-2"]
    assert outgoing.select(a, nav.range(f"s{a}-2", None), nav.MAP_VALS, "to_id") == [b]
    assert outgoing.select(a, nav.must("nope")) == []
    assert outgoing.select_one(a, nav.SIZE) == 2
    with pytest.raises(hw.PathError):
        outgoing.select_one(a, nav.MAP_VALS)
