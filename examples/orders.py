"""Orders stored in the shape the application thinks in: a map of records holding a list of line items.

Fetch a whole order, drill into one field, or change one line item without rewriting the order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import headwater as hw


@dataclass
class LineItem:
    product_id: uuid.UUID
    quantity: int
    price_cents: int


@dataclass
class Address:
    street: str
    city: str
    state: str
    zip: str


@dataclass
class NewOrder:
    order_id: uuid.UUID
    customer_id: uuid.UUID
    items: list[LineItem]
    shipping: Address


@dataclass
class UpdateLineItemQuantity:
    order_id: uuid.UUID
    item_index: int
    new_quantity: int


orders_module = hw.Module("orders")

new_orders = orders_module.depot("new_orders", NewOrder, partition_by="order_id")
line_item_updates = orders_module.depot("line_item_updates", UpdateLineItemQuantity, partition_by="order_id")

orders = orders_module.pstate(
    "orders",
    hw.Map(uuid.UUID, hw.Record(customer_id=uuid.UUID, shipping=Address, items=hw.List(LineItem, subindexed=True))),
)


@orders_module.stream(new_orders)
def new_order(ctx: hw.Context, order: NewOrder) -> int:
    ctx.pstate(orders)[order.order_id].set(
        {"customer_id": order.customer_id, "shipping": order.shipping, "items": order.items}
    )
    return sum(item.quantity * item.price_cents for item in order.items)


@orders_module.stream(line_item_updates)
def update_line_item(ctx: hw.Context, update: UpdateLineItemQuantity) -> bool:
    items = ctx.pstate(orders)[update.order_id]["items"]
    if not 0 <= update.item_index < items.size():
        return False  # no such order or line item: nothing to change
    item = items[update.item_index]
    old: LineItem = item.get()
    item.set(LineItem(old.product_id, update.new_quantity, old.price_cents))
    return True
