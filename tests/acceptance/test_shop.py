"""The shop example: three services connected only by mirrors, on every cluster kind."""

from __future__ import annotations

import pytest

import headwater as hw
from examples.shop import OpenAccount, PlaceOrder, accounts, checkout, notifications
from tests.waiting import wait_for

WAIT_S = 30.0


def test_the_three_services_use_each_other_only_through_mirrors():
    assert accounts.dependencies() == {}
    assert checkout.dependencies() == {"accounts": [("pstate", "accounts")]}
    assert notifications.dependencies() == {"accounts": [("depot", "opened"), ("pstate", "accounts")],
                                            "checkout": [("depot", "orders"), ("query", "spent")]}


def test_accounts_orders_and_notifications_work_together(cluster):
    with pytest.raises(hw.DefinitionError, match="of module 'accounts', which is not deployed"):
        cluster.deploy(checkout)
    cluster.deploy(accounts, tasks=2)  # each service with its own task count
    cluster.deploy(checkout, tasks=3)
    cluster.deploy(notifications, tasks=1)

    signups = cluster.depot("accounts", "signups")
    assert signups.append(OpenAccount("a1", "ada@example.com", "Ada"))["open_account"] is True
    assert signups.append(OpenAccount("a2", "alan@example.com", "Alan"))["open_account"] is True
    assert signups.append(OpenAccount("a1", "eve@example.com", "Eve"))["open_account"] is False

    orders = cluster.depot("checkout", "orders")
    assert orders.append(PlaceOrder("o1", "a1", 2500))["place"] == "accepted"
    assert orders.append(PlaceOrder("o2", "a1", 1000))["place"] == "accepted"
    assert orders.append(PlaceOrder("o3", "nobody", 999))["place"] == "rejected: no such account"

    inbox = cluster.query("notifications", "inbox")
    found = wait_for(lambda: (box := inbox("a1")) and len(box["messages"]) == 3 and box, "a1's notifications",
                     WAIT_S)
    assert sorted(m["subject"] for m in found["messages"]) == [
        "Order o1 received: 25.00", "Order o2 received: 10.00", "Welcome, Ada!"]  # not Eve: a1 was taken
    assert {m["to"] for m in found["messages"] if m["subject"].startswith("Order")} == {"ada@example.com"}
    assert found["spent_cents"] == 3500
    wait_for(lambda: len(inbox("a2")["messages"]) == 1, "a2's welcome", WAIT_S)
    assert inbox("nobody") == {"messages": [], "spent_cents": 0}  # a rejected order notifies no one

    with pytest.raises(hw.DefinitionError, match="'accounts' cannot be destroyed: module\\(s\\) 'checkout', "
                                                 "'notifications' mirror it"):
        cluster.destroy("accounts")
