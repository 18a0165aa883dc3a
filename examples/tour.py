"""A guided tour: run the example modules on an embedded cluster and show what happens.

    python -m examples.tour       # data in the tour's own directory; run it twice to see state survive a restart
    python -m examples.tour --data /some/dir

The tour keeps its data apart from `make run`'s ./data, so the two can run at the same time: a data
directory serves one process at a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import headwater as hw
from examples.bank import Deposit, Transfer, bank
from examples.orders import Address, LineItem, NewOrder, UpdateLineItemQuantity, orders_module
from examples.registration import UserSignUp, registration


def say(text: str) -> None:
    print(f"\n== {text}")


def show(label: str, value: object) -> None:
    print(f"   {label:<52} -> {value!r}")


def tour_registration(cluster: hw.InProcessCluster) -> None:
    say("registration: append a sign-up, wait for the topology, get its answer back")
    signups = cluster.depot("registration", "registrations")
    now_ms = int(time.time() * 1000)
    started = time.perf_counter()
    result = signups.append(UserSignUp("ada@example.com", "pbkdf2$...", now_ms))
    elapsed_ms = (time.perf_counter() - started) * 1000
    show("append(UserSignUp('ada@example.com', ...))['register']", result["register"])
    print(f"   (False = new user; True = already registered, e.g. on a second run. "
          f"Durable and processed in {elapsed_ms:.2f} ms, partition {result.partition}, offset {result.offset})")
    show("pstate('users')['ada@example.com']['registered_ms']", cluster.pstate("registration", "users")["ada@example.com"]["registered_ms"].get())
    day = time.strftime("%Y-%m-%d", time.gmtime(now_ms / 1000))
    show(f"query('signups_on')({day!r})", cluster.query("registration", "signups_on")(day))


def tour_orders(cluster: hw.InProcessCluster) -> None:
    say("orders: a map of records holding a list, read whole or drilled into")
    order_id = uuid.uuid4()
    items = [LineItem(uuid.uuid4(), 2, 1999), LineItem(uuid.uuid4(), 1, 4500)]
    new = NewOrder(order_id, uuid.uuid4(), items, Address("1 Main St", "Springfield", "IL", "62701"))
    show("append(NewOrder(...))['new_order']  (total cents)", cluster.depot("orders", "new_orders").append(new)["new_order"])
    orders = cluster.pstate("orders", "orders")
    show("orders[id]['shipping'].get().city", orders[order_id]["shipping"].get().city)
    cluster.depot("orders", "line_item_updates").append(UpdateLineItemQuantity(order_id, 0, 5))
    show("after UpdateLineItemQuantity: orders[id]['items'][0].quantity", orders[order_id]["items"][0].get().quantity)
    show("orders[id]['items'].size()", orders[order_id]["items"].size())


def tour_bank(cluster: hw.InProcessCluster) -> None:
    say("bank: transfers hop to the receiver's task; the full ack waits for the whole tree")
    deposits, transfers = cluster.depot("bank", "deposits"), cluster.depot("bank", "transfers")
    show("append(Deposit(1, 100))['deposit']  (new balance)", deposits.append(Deposit(1, 100))["deposit"])
    tid = uuid.uuid4().hex[:8]
    show(f"append(Transfer({tid!r}, 1, 2, 30))['transfer']", transfers.append(Transfer(tid, 1, 2, 30))["transfer"])
    show(f"append(Transfer('{tid}b', 1, 2, 10_000))['transfer']", transfers.append(Transfer(tid + "b", 1, 2, 10_000))["transfer"])
    funds = cluster.pstate("bank", "funds")
    show("funds[1].get(), funds[2].get()", (funds[1].get(), funds[2].get()))
    show("query('total_funds')()", cluster.query("bank", "total_funds")())
    say("mistakes get clear errors, and nothing is written")
    try:
        deposits.append({"user_id": "one", "amount": 5})
    except hw.SchemaError as e:
        show("append({'user_id': 'one', ...})", f"SchemaError: {e}")
    try:
        cluster.pstate("bank", "fund")
    except hw.NotFound as e:
        show("pstate('bank', 'fund')", f"NotFound: {e}")


def default_data() -> Path:
    """The tour's own data directory, in the system's temporary directory: kept between runs, never ./data."""
    return Path(tempfile.gettempdir()) / "headwater-tour"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(default_data()), help="data directory, kept between runs "
                        "(default: %(default)s, apart from make run's ./data)")
    parser.add_argument("--tasks", type=int, default=4, help="tasks per module on first deploy")
    args = parser.parse_args(argv)
    try:
        run(args.data, args.tasks)
    except hw.StorageError as e:  # above all a data directory that another process has open
        sys.exit(f"tour: {e} (pass --data DIR to the tour for another directory)")
    print(f"\nDone. Run `python -m examples.tour` again: the data in {args.data!r} is reattached and the answers change.")


def run(data: str, tasks: int) -> None:
    with hw.InProcessCluster(data) as cluster:
        for module in (registration, orders_module, bank):
            cluster.deploy(module, tasks=None if (cluster.path / module.name / "module.json").exists() else tasks)
        print(f"headwater: modules {cluster.modules()} running in process, data in {data!r}")
        tour_registration(cluster)
        tour_orders(cluster)
        tour_bank(cluster)


if __name__ == "__main__":
    main()
