"""The modules in examples/ do what the README and docs say they do."""

from __future__ import annotations

import uuid

import pytest

import headwater as hw
from examples.bank import Deposit, Transfer, bank
from examples.orders import Address, LineItem, NewOrder, UpdateLineItemQuantity, orders_module
from examples.registration import UserSignUp, registration

DAY_MS = 1_700_000_000_000  # 2023-11-14 UTC


def test_registration_returns_whether_the_user_existed(cluster):
    cluster.deploy(registration, tasks=4)
    signups = cluster.depot("registration", "registrations")
    first = signups.append(UserSignUp("ada@example.com", "h1", DAY_MS))
    assert first["register"] is False
    again = signups.append(UserSignUp("ada@example.com", "h2", DAY_MS))
    assert again["register"] is True
    for i in range(10):
        signups.append(UserSignUp(f"user{i}@example.com", "h", DAY_MS))
    users = cluster.pstate("registration", "users")
    assert users["ada@example.com"].get() == {"pwd_hash": "h1", "registered_ms": DAY_MS}
    assert users["ada@example.com"]["pwd_hash"].get() == "h1"
    assert users["nobody@example.com"].get() is None
    assert cluster.query("registration", "signups_on")("2023-11-14") == 11


def test_orders_are_stored_in_the_shape_of_the_application(cluster):
    cluster.deploy(orders_module, tasks=2)
    order_id, customer = uuid.uuid4(), uuid.uuid4()
    items = [LineItem(uuid.uuid4(), 2, 500), LineItem(uuid.uuid4(), 1, 1250), LineItem(uuid.uuid4(), 3, 100)]
    shipping = Address("1 Main St", "Springfield", "IL", "62701")
    result = cluster.depot("orders", "new_orders").append(NewOrder(order_id, customer, items, shipping))
    assert result["new_order"] == 2 * 500 + 1250 + 3 * 100

    orders = cluster.pstate("orders", "orders")
    assert orders[order_id].get() == {"customer_id": customer, "shipping": shipping, "items": items}
    assert orders[order_id]["shipping"].get().city == "Springfield"
    assert orders[order_id]["items"][2].get() == items[2]
    assert orders[order_id]["items"].size() == 3

    updates = cluster.depot("orders", "line_item_updates")
    assert updates.append(UpdateLineItemQuantity(order_id, 1, 7))["update_line_item"] is True
    assert orders[order_id]["items"][1].get().quantity == 7
    assert updates.append(UpdateLineItemQuantity(order_id, 9, 1))["update_line_item"] is False
    assert updates.append(UpdateLineItemQuantity(uuid.uuid4(), 0, 1))["update_line_item"] is False


def test_bank_transfers_hop_and_totals_add_up(cluster):
    cluster.deploy(bank, tasks=4)
    deposits = cluster.depot("bank", "deposits")
    transfers = cluster.depot("bank", "transfers")
    for user in range(8):
        assert deposits.append(Deposit(user, 100))["deposit"] == 100
    assert transfers.append(Transfer("t1", 0, 5, 60))["transfer"] is True
    assert transfers.append(Transfer("t2", 0, 6, 60))["transfer"] is False  # only 40 left
    funds = cluster.pstate("bank", "funds")
    assert funds[0].get() == 40
    assert funds[5].get() == 160  # the full ack waited for the hop that credits user 5
    assert funds[6].get() == 100
    assert cluster.pstate("bank", "incoming")[6]["t2"].get() == {"from_id": 0, "amount": 60, "ok": False}
    assert cluster.pstate("bank", "outgoing")[0].keys() == ["t1", "t2"]
    assert cluster.query("bank", "total_funds")() == 800


@pytest.mark.parametrize("name", ["registration", "orders", "bank"])
def test_example_modules_deploy_with_one_task(cluster, name):
    module = {"registration": registration, "orders": orders_module, "bank": bank}[name]
    cluster.deploy(module)
    assert cluster.modules() == [name]


def test_the_readme_paths_screen(cluster):
    cluster.deploy(bank, tasks=4)
    cluster.depot("bank", "deposits").append(Deposit(1, 100))
    for i in range(1, 6):
        cluster.depot("bank", "transfers").append(Transfer(f"t{i}", 1, 5, 10))
    assert cluster.pstate("bank", "funds")[1].get() == 50
    incoming = cluster.pstate("bank", "incoming")
    assert incoming[5].select(hw.ALL)[0] == ("t1", {"from_id": 1, "amount": 10, "ok": True})
    assert incoming[5].select(hw.MAP_VALS, "amount") == [10] * 5
    assert incoming[5].select(hw.range("t1", "t5"), hw.SIZE) == [4]
    assert incoming[5].select_one(hw.must("t2"), "ok") is True
    with pytest.raises(hw.PathError, match="found 5"):
        incoming[5].select_one(hw.MAP_VALS)
    assert cluster.query("bank", "total_funds")() == 100
