"""What only the remote client does: values without the module's classes, paging, connection errors."""

from __future__ import annotations

import uuid

import pytest

import headwater as hw
import headwater.client.remote as remote
from examples.orders import Address, LineItem, NewOrder
from tests.server.support import Job


def test_without_the_modules_values_come_back_json_shaped(backend):
    cluster, url, _ = backend
    order_id, product = uuid.uuid4(), uuid.uuid4()
    cluster.depot("orders", "new_orders").append(NewOrder(order_id, uuid.uuid4(), [LineItem(product, 3, 7)], Address("s", "c", "st", "z")))
    with hw.connect(url) as client:
        orders = client.pstate("orders", "orders")
        # Keys and scalar leaves keep their types (the listing describes them); dataclasses become dicts.
        assert orders[order_id]["shipping"].get() == {"street": "s", "city": "c", "state": "st", "zip": "z"}
        assert orders[order_id]["items"][0].get() == {"product_id": str(product), "quantity": 3, "price_cents": 7}
        assert isinstance(orders[order_id]["customer_id"].get(), uuid.UUID)
        with pytest.raises(hw.PathError, match="no field"):
            orders[order_id]["nope"]
        [record] = client.depot("orders", "new_orders").read(0, 0, 1) or client.depot("orders", "new_orders").read(1, 0, 1)
        assert isinstance(record.event, dict) and "order_id" in record.event


def test_long_ranges_are_fetched_in_pages(backend, monkeypatch):
    cluster, url, jobs = backend
    cluster.depot("jobs", "jobs").append_many([Job(5000 + i) for i in range(9)])
    monkeypatch.setattr(remote, "READ_PAGE_MAX", 2)
    with hw.connect(url, modules=[jobs]) as client:
        done = client.pstate("jobs", "done", task=0)
        expected = cluster.pstate("jobs", "done", task=0).keys()
        assert done.keys() == expected and len(expected) > 2
        assert done.keys(reverse=True) == expected[::-1]
        assert done.items(limit=3) == cluster.pstate("jobs", "done", task=0).items(limit=3)
        assert done.values() == cluster.pstate("jobs", "done", task=0).values()


def test_an_unreachable_server_is_unavailable():
    with hw.connect("http://127.0.0.1:9") as client, pytest.raises(hw.Unavailable, match="cannot reach"):
        client.modules()


def test_a_closed_client_is_unavailable(backend):
    client = hw.connect(backend[1])
    client.close()
    with pytest.raises(hw.Unavailable, match="closed"):
        client.modules()
