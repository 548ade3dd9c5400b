"""The JSON views the actors answer with."""

from __future__ import annotations

from typing import Any

from domain import order as o


def order_view(order: o.Order) -> dict[str, Any]:
    view: dict[str, Any] = {
        "order_id": str(order.order_id), "customer_id": str(order.customer_id), "status": order.status.value,
        "items": [{"product_id": str(x.product_id), "quantity": x.quantity, "unit_price": str(x.unit_price)}
                  for x in order.lines],
        "total_amount": str(order.total_amount), "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(), "version": order.version, "saga_id": str(order.saga_id),
    }
    if order.reason:
        view["reason"] = order.reason
    return view
