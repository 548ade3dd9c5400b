"""What the HTTP routes do, without HTTP: each use case takes the caller, the services and plain values,
and returns a view. The access rules a use case needs (whose order, whose cart) are applied here, on
the caller the route identified; the business rules themselves stay in ``domain/`` and the actors."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from actors.client import call
from actors.views import OrderView, Placed, order_json
from commerce import logs, views
from commerce.auth import Forbidden, Principal
from commerce.services import Services
from domain import cart as cart_domain
from domain import errors, inventory, order
from store import queries
from store.reservations import Claim, DirectReservation


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def acting_for(who: Principal, customer_id: uuid.UUID | None) -> uuid.UUID:
    """The customer a shopper acts for: a customer itself; an admin names one."""
    if who.is_admin:
        if customer_id is None:
            raise errors.DomainError("an admin acting for a customer names it in customer_id")
        return customer_id
    if customer_id is not None and customer_id != who.customer_id:
        raise Forbidden("customer_id must be the caller's own")
    return who.customer_id


def owner_filter(who: Principal) -> uuid.UUID | None:
    """Whose entities a caller sees: an admin everyone's, a customer its own."""
    return None if who.is_admin else who.customer_id


# --- stock ----------------------------------------------------------------------------------------


async def reserve(svc: Services, who: Principal, product_id: uuid.UUID, reservation_id: uuid.UUID, quantity: int,
                  ttl_seconds: int | None, expected_version: int | None) -> dict[str, Any]:
    """A direct reservation, owned by its caller; its id is registered first, so that reusing it for
    another caller, product or quantity is refused even after the reservation has ended. A reserve sent
    again answers the same reservation while it holds stock; once it has ended (released, expired, sold,
    or forgotten by its SKU), a 409 ``reservation-closed``: the caller must not believe it holds stock. An
    unknown product is looked for before the id is registered (products are never removed: one found stays),
    so that its 404 leaves the id as it was; an id another reservation has is a 409 all the same."""
    wanted = DirectReservation(reservation_id, product_id, who.key, quantity)
    try:
        await svc.inventory.get_stock(product_id)
    except inventory.UnknownProduct:
        if await svc.direct_reservations.registered(reservation_id) not in (None, wanted):
            raise inventory.ReservationIdConflict(reservation_id) from None
        raise
    claim = await svc.direct_reservations.claim(wanted)
    if claim is Claim.TAKEN:
        raise inventory.ReservationIdConflict(reservation_id)
    expires_at = now() + dt.timedelta(seconds=ttl_seconds or svc.settings.reservation_ttl)
    reserved = await svc.inventory.reserve(product_id, reservation_id, quantity, expires_at, who.key, expected_version,
                                           held_before=claim is Claim.HELD)
    if claim is Claim.OPEN:
        await svc.direct_reservations.held(reservation_id)
    if reserved.outcome is not inventory.Outcome.ACTIVE:
        raise inventory.ReservationNotActive(reservation_id, reserved.outcome.value)
    if reserved.expires_at <= now():  # its expiry has not run yet
        raise inventory.ReservationNotActive(reservation_id, inventory.Outcome.EXPIRED.value)
    return reserved.json()


async def release(svc: Services, who: Principal, product_id: uuid.UUID, reservation_id: uuid.UUID) -> dict[str, Any]:
    """Release the caller's own reservation (an admin: any direct one); the product's stock after it."""
    return (await svc.inventory.release(product_id, reservation_id, who.key, who.is_admin)).json()


# --- carts ----------------------------------------------------------------------------------------


async def create_cart(svc: Services, cart_id: uuid.UUID, customer_id: uuid.UUID) -> dict[str, Any]:
    return views.cart(await svc.carts.create(cart_id, customer_id, now()))


async def get_cart(svc: Services, who: Principal, cart_id: uuid.UUID) -> dict[str, Any]:
    return views.cart(await svc.carts.get(cart_id, owner_filter(who)))


async def set_cart_line(svc: Services, who: Principal, cart_id: uuid.UUID, product_id: uuid.UUID,
                        quantity: int) -> dict[str, Any]:
    """Set a line at the catalog's price (0 removes it). The cart store refuses an unknown or another
    customer's cart, or one checked out, in the same atomic step."""
    stock = await svc.inventory.get_stock(product_id)  # an unknown product is a 404, for a removal too
    operation = "set_item" if quantity else "remove_item"
    return views.cart(await svc.carts.set_line(cart_id, product_id, quantity, stock.price, now(), operation,
                                               owner_filter(who)))


async def remove_cart_line(svc: Services, who: Principal, cart_id: uuid.UUID, product_id: uuid.UUID) -> dict[str, Any]:
    return views.cart(await svc.carts.set_line(cart_id, product_id, 0, Decimal(0), now(), "remove_item",
                                               owner_filter(who)))


async def checkout(svc: Services, who: Principal, cart_id: uuid.UUID, shipping_address: dict[str, str],
                   payment_token: str) -> tuple[uuid.UUID, dict[str, Any]]:
    """Turn the cart into its order once: the order's id follows from the cart's, so a second checkout
    (or a retry after a crash between the two writes) answers with the same order."""
    pinned = cart_domain.checkout_order_id(cart_id)
    cart = await svc.carts.begin_checkout(cart_id, pinned, now(), owner_filter(who))
    order_id = cart.order_id or pinned
    logs.correlate(order_id)
    if cart.status is cart_domain.CartStatus.CHECKED_OUT:  # its order exists: the checkout answers with it
        return order_id, _placed(await svc.orders.get_order(order_id))
    try:
        placed = await svc.orders.create_order(order_id, cart.customer_id,
                                               [(x.product_id, x.quantity) for x in cart.lines],
                                               shipping_address, payment_token)
    except order.OrderAlreadyExists:
        # Placed from other lines, by a request of an earlier checkout of this cart whose other request opened
        # it again: that is the cart's order. The cart is checked out with its lines, and never places another.
        existing = await svc.orders.get_order(order_id)
        if existing.customer_id != cart.customer_id:  # not this cart's: never the case, as its id derives from the cart's
            raise
        await svc.carts.finish_checkout(cart_id, order_id, [cart_domain.CartLine(x.product_id, x.quantity,
                                                                                 x.unit_price) for x in existing.lines])
        return order_id, _placed(existing)
    except errors.DomainError:
        # No order: the cart is the customer's again, unless a later checkout of it is under way.
        await svc.carts.abort_checkout(cart_id, cart.version)
        raise
    await svc.carts.finish_checkout(cart_id, order_id, cart.lines)
    return order_id, placed.json()


def _placed(view: OrderView) -> dict[str, Any]:
    """A checkout's answer for an order placed before, as its placing answered."""
    return Placed(view.order_id, view.status, view.saga_id).json()


async def reorder(svc: Services, who: Principal, order_id: uuid.UUID, cart_id: uuid.UUID) -> dict[str, Any]:
    """A new cart with a past order's lines at today's prices; products that are gone are left out."""
    past = await _owned(svc, who, order_id)
    cart = await svc.carts.create(cart_id, past.customer_id, now())
    prices = await svc.inventory.prices([line.product_id for line in past.lines])
    for line in past.lines:
        if line.product_id in prices:
            cart = await svc.carts.set_line(cart.id, line.product_id, line.quantity, prices[line.product_id], now(),
                                            "set_item")
    return views.cart(cart)


# --- orders ---------------------------------------------------------------------------------------


async def place_order(svc: Services, customer_id: uuid.UUID, order_id: uuid.UUID | None,
                      items: list[tuple[uuid.UUID, int]], shipping_address: dict[str, str],
                      payment_token: str) -> tuple[uuid.UUID, dict[str, Any]]:
    """Place the order under ``order_id`` (the id an Idempotency-Key gives), or under a new random id."""
    new = order_id is None
    order_id = order_id or uuid.uuid4()
    logs.correlate(order_id)
    placed = await svc.orders.create_order(order_id, customer_id, items, shipping_address, payment_token, new)
    return order_id, placed.json()


async def owned_order(svc: Services, who: Principal, order_id: uuid.UUID) -> dict[str, Any]:
    """The order, if the caller may see it: another customer's order is not found."""
    return (await _owned(svc, who, order_id)).json()


async def _owned(svc: Services, who: Principal, order_id: uuid.UUID) -> OrderView:
    view = await svc.orders.get_order(order_id)
    if not who.is_admin and view.customer_id != who.customer_id:
        raise errors.NotFound(f"unknown order {order_id}")
    logs.correlate(order_id)  # the caller's own order: the request's lines belong to its story
    return view


async def cancel_order(svc: Services, who: Principal, order_id: uuid.UUID, reason: str | None,
                       command_id: uuid.UUID | None) -> tuple[bool, dict[str, Any]]:
    """Whether the cancel was accepted now (False: cancelled before), and the order."""
    await _owned(svc, who, order_id)
    cancelled = await svc.orders.cancel_order(order_id, reason or "cancelled by customer", command_id)
    return cancelled.accepted, cancelled.order.json()


async def order_events(svc: Services, who: Principal, order_id: uuid.UUID) -> dict[str, Any]:
    await _owned(svc, who, order_id)  # before any stream is read: only an order's owner reads it
    return {"items": [views.event(r) for r in await svc.events.load_stream(order_id)]}


async def list_orders(svc: Services, who: Principal, customer_id: uuid.UUID | None, status: order.OrderStatus | None,
                      limit: int, cursor: str | None) -> dict[str, Any]:
    """Orders newest first, from the read model: a customer's own; an admin's, anyone's."""
    if not who.is_admin:
        customer_id = acting_for(who, customer_id)
    rows, next_cursor = await queries.list_orders(svc.pool, customer_id=customer_id,
                                                  status=status.value if status else None, limit=limit, cursor=cursor)
    return {"items": [order_json(r["order_id"], r["customer_id"], r["status"], r["items"], r["total_amount"],
                                 r["created_at"], r["updated_at"], r["version"], r["saga_id"], r["reason"])
                      for r in rows], "next_cursor": next_cursor}


# --- operations -----------------------------------------------------------------------------------


async def saga(svc: Services, saga_id: uuid.UUID) -> dict[str, Any]:
    found = await svc.sagas.get(saga_id)
    if found is None:
        raise errors.NotFound(f"unknown saga {saga_id}")
    logs.correlate(found["order_id"])
    return found


async def retry_saga(svc: Services, saga_id: uuid.UUID, command_id: uuid.UUID | None) -> dict[str, Any]:
    """Resume a FAILED saga from its failed step."""
    return (await svc.orders.retry_saga((await saga(svc, saga_id))["order_id"], command_id)).json()


async def compensate_saga(svc: Services, saga_id: uuid.UUID, reason: str | None,
                          command_id: uuid.UUID | None) -> dict[str, Any]:
    found = await saga(svc, saga_id)
    state = await svc.orders.compensate_saga(found["order_id"], reason or "compensated by an operator", command_id)
    return state.json()


async def list_sagas(svc: Services, status: str | None, order_id: uuid.UUID | None, stuck_for: float | None,
                     limit: int, cursor: str | None) -> dict[str, Any]:
    rows = await svc.sagas.list(status=status, order_id=order_id, limit=limit + 1,
                                cursor=queries.decode_cursor(cursor), stuck_for=stuck_for)
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = queries.encode_cursor(last["created_at"], last["saga_id"]) if last else None
    return {"items": [views.saga_summary(r) for r in rows[:limit]], "next_cursor": next_cursor}


async def query_events(svc: Services, limit: int, **where: Any) -> dict[str, Any]:
    records = await svc.events.query(**where, limit=limit)
    return {"items": [{"position": r.position, "aggregate_id": str(r.aggregate_id),
                       "aggregate_type": r.aggregate_type, **views.event(r)} for r in records],
            "next_position": records[-1].position if len(records) == limit else None}


async def locate(svc: Services, entity_id: uuid.UUID) -> dict[str, Any]:
    """The shard actor and node of an order or a SKU, and whether it is in memory now."""
    kind = await svc.events.aggregate_type(entity_id)
    if kind not in (order.AGGREGATE_TYPE, inventory.AGGREGATE_TYPE):
        raise errors.NotFound(f"no order or SKU {entity_id}")
    name = "order" if kind == order.AGGREGATE_TYPE else "inventory"
    shard = svc.actors.shard_of(name, entity_id)
    where = await call(shard, "describe", timeout=10.0)
    found = await call(shard, "locate", entity_id, timeout=10.0)
    return {"entity_id": str(entity_id), "kind": name, "shard": where["shard"], "actor_id": where["actor_id"],
            "node_id": where["node_id"], "active": found["active"]}
