"""A shop as three services — accounts, checkout, notifications — connected only by mirrors.

Each module is what a team would own as a microservice: its own depots, PStates, topologies and
queries, deployed and updated on its own. Where microservices need a shared database, CDC
pipelines, a queue between services and retries at every boundary, these use each other's logs
and state by name:

| the microservices problem                  | here                                                        |
|--------------------------------------------|-------------------------------------------------------------|
| data locked in another team's database     | `mirror_pstate`: checkout reads `accounts.accounts`         |
| CDC or a queue to react to another service | `mirror_depot`: notifications consumes both services' logs  |
| data duplicated into every consumer        | a mirror keeps an event only until it is processed          |
| retries and back-offs at each boundary     | a mirror copies each event exactly once, across crashes     |
| an API to ask another service a question   | `mirror_query`: notifications asks checkout for totals      |
| deployment order and broken dependencies   | deploy, update and destroy check the dependency graph       |
| integration tests needing infrastructure   | all three run in one test process (tests/acceptance)        |

    cluster.deploy(accounts); cluster.deploy(checkout); cluster.deploy(notifications)
    cluster.depot("accounts", "signups").append(OpenAccount("a1", "ada@example.com", "Ada"))
    cluster.depot("checkout", "orders").append(PlaceOrder("o1", "a1", 2500))["place"]   # "accepted"
    cluster.query("notifications", "inbox")("a1")   # the welcome and the order confirmation
"""

from __future__ import annotations

from dataclasses import dataclass

import headwater as hw


@dataclass
class OpenAccount:
    account_id: str
    email: str
    name: str


@dataclass
class AccountOpened:
    account_id: str
    email: str
    name: str


@dataclass
class PlaceOrder:
    order_id: str
    account_id: str
    total_cents: int


# ---- accounts: who the customers are --------------------------------------------------------
accounts = hw.Module("accounts")
signups = accounts.depot("signups", OpenAccount, partition_by="account_id")  # what customers ask for
opened = accounts.depot("opened", AccountOpened, partition_by="account_id", client_appends=False)  # what happened
account_table = accounts.pstate("accounts", hw.Map(str, hw.Record(email=str, name=str)))


@accounts.stream(signups)
def open_account(ctx: hw.Context, event: OpenAccount) -> bool:
    """Opens the account and records that it did; False if the id is taken."""
    account = ctx.pstate(account_table)[event.account_id]
    if account.exists():
        return False
    account.set({"email": event.email, "name": event.name})
    ctx.append(opened, AccountOpened(event.account_id, event.email, event.name))
    return True


# ---- checkout: orders, checked against the accounts it does not own -------------------------
checkout = hw.Module("checkout")
orders = checkout.depot("orders", PlaceOrder, partition_by="account_id")
known_accounts = checkout.mirror_pstate("accounts", "accounts")
orders_by_account = checkout.pstate("orders_by_account",
                                    hw.Map(str, hw.Map(str, hw.Record(total_cents=int, status=str))))


@checkout.stream(orders)
def place(ctx: hw.Context, order: PlaceOrder) -> str:
    """Accepts an order of a known account (read from the accounts service as it is now)."""
    status = "accepted" if ctx.pstate(known_accounts)[order.account_id].exists() else "rejected: no such account"
    ctx.pstate(orders_by_account)[order.account_id][order.order_id].set(
        {"total_cents": order.total_cents, "status": status})
    return status


@checkout.query(route_by="account_id")
def spent(ctx: hw.QueryContext, account_id: str) -> int:
    """What an account's accepted orders add up to, in cents."""
    placed = ctx.pstate(orders_by_account)[account_id].get({})
    return sum(o["total_cents"] for o in placed.values() if o["status"] == "accepted")


# ---- notifications: reacts to both, owns only its outbox ------------------------------------
notifications = hw.Module("notifications")
new_accounts = notifications.mirror_depot("accounts", "opened")
new_orders = notifications.mirror_depot("checkout", "orders")
customers = notifications.mirror_pstate("accounts", "accounts")
spent_by = notifications.mirror_query("checkout", "spent")
outbox = notifications.pstate("outbox", hw.Map(str, hw.List(hw.Record(to=str, subject=str))))


@notifications.stream(new_accounts)
def welcome(ctx: hw.Context, event: AccountOpened) -> None:
    ctx.pstate(outbox)[event.account_id].append({"to": event.email, "subject": f"Welcome, {event.name}!"})


@notifications.stream(new_orders)
def confirm(ctx: hw.Context, order: PlaceOrder) -> None:
    customer = ctx.pstate(customers)[order.account_id].get(None)
    if customer is None:
        return  # checkout rejected it: nobody to tell
    subject = f"Order {order.order_id} received: {order.total_cents / 100:.2f}"
    ctx.pstate(outbox)[order.account_id].append({"to": customer["email"], "subject": subject})


@notifications.query(route_by="account_id")
def inbox(ctx: hw.QueryContext, account_id: str) -> dict:
    """An account's notifications, with what it has spent (asked of checkout)."""
    return {"messages": ctx.pstate(outbox)[account_id].get([]), "spent_cents": ctx.query(spent_by)(account_id)}
