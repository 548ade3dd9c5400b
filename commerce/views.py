"""The JSON views the routes answer with, of what the stores return (the actors' own views are in
``actors/views.py``)."""

from __future__ import annotations

from typing import Any

from domain import cart as cart_domain
from domain.events import Recorded, encode


def cart(c: cart_domain.Cart) -> dict[str, Any]:
    return {
        "id": str(c.id), "customer_id": str(c.customer_id),
        "items": [{"product_id": str(x.product_id), "quantity": x.quantity, "unit_price": str(x.unit_price),
                   "line_total": str(x.line_total)} for x in c.lines],
        "total": str(c.total), "created_at": c.created_at.isoformat(), "updated_at": c.updated_at.isoformat(),
        "expires_at": c.expires_at.isoformat(), "status": c.status.value,
        **({"order_id": str(c.order_id)} if c.order_id else {}),
    }


def event(r: Recorded) -> dict[str, Any]:
    data: dict[str, Any] = encode(r.event)
    data.pop("payment_token", None)  # a payment method reference is not shown back
    return {"event_id": str(r.metadata.event_id), "event_type": r.event_type, "version": r.version, "data": data,
            "created_at": r.at.isoformat()}


def saga_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"saga_id": str(row["saga_id"]), "saga_type": row["saga_type"], "order_id": str(row["order_id"]),
            "status": row["status"], "current_step": row["current_step"], "attempts": row["attempts"],
            "created_at": row["created_at"].isoformat(), "updated_at": row["updated_at"].isoformat()}


def saga_detail(saga: dict[str, Any]) -> dict[str, Any]:
    """A saga with its reason, every step's attempts and, while it waits to retry, when it retries."""
    steps = [{"step": s["step"], "action": s["action"], "outcome": s["outcome"], "attempt": s["attempt"],
              "at": s["at"].isoformat(), **({"error": s["error"]} if s["error"] else {})} for s in saga["steps"]]
    retry_at = saga["saga_data"].get("retry_at") if saga["status"] in ("RUNNING", "COMPENSATING") else None
    return {**saga_summary(saga), "reason": saga["saga_data"].get("reason"), "steps": steps,
            **({"next_attempt_at": retry_at} if retry_at else {})}
