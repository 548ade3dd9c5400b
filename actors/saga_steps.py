"""The external calls behind each saga step and compensation.

Keys derive from the saga id and step (domain.fulfilment), so a replayed step never reserves,
charges or ships twice. Business failures (declined, undeliverable, out of stock) come back as
non-retryable results; outages and timeouts as retryable ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from actors.client import InventoryClient, ServiceTimeout, ServiceUnavailable
from actors.providers import PaymentProvider, ProviderResult, ShippingProvider
from domain import fulfilment as ff
from domain import inventory as inv
from domain import order as o
from domain import saga as sg
from store.errors import StoreUnavailable

Outcome = tuple[sg.StepResult, ff.StepData]
_BUSINESS = (inv.InsufficientStock, inv.UnknownProduct, inv.ReservationNotActive, inv.InvalidStock,
             inv.UnknownReservation, inv.ReservationIdConflict)


class StepRunner:
    def __init__(self, inventory: InventoryClient, payments: PaymentProvider, shipping: ShippingProvider,
                 reservation_ttl: float, reservation_key: bytes) -> None:
        self.inventory = inventory
        self.reservation_key = reservation_key
        self.payments = payments
        self.shipping = shipping
        self.reservation_ttl = reservation_ttl
        self._steps: dict[sg.Step, Callable[[o.Order, sg.Saga, sg.RunStep], Awaitable[Outcome]]] = {
            sg.Step.RESERVE_INVENTORY: self.reserve_inventory,
            sg.Step.PROCESS_PAYMENT: self.process_payment,
            sg.Step.CREATE_SHIPMENT: self.create_shipment,
            sg.Step.CONFIRM_ORDER: self.confirm_order,
            sg.Step.RELEASE_INVENTORY: self.release_inventory,
            sg.Step.REFUND_PAYMENT: self.refund_payment,
            sg.Step.CANCEL_SHIPMENT: self.cancel_shipment,
            sg.Step.CANCEL_ORDER: self.cancel_order,
        }

    async def run(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        try:
            return await self._steps[sg.Step(action.step)](order, saga, action)
        except _BUSINESS as e:
            return sg.StepResult(False, retryable=False, error=str(e)), ff.StepData()
        except (TimeoutError, ServiceTimeout) as e:  # there but too slow: counted, as the engine's own timeout is
            return sg.StepResult.raised(e), ff.StepData()
        except (StoreUnavailable, ServiceUnavailable, OSError) as e:  # unreachable or down: an outage, waited out
            return sg.StepResult.raised(e, unavailable=True), ff.StepData()

    async def reserve_inventory(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        """Reserve every line; the step succeeds only with exactly what it asked for."""
        expires_at = saga.holds_from + dt.timedelta(seconds=self.reservation_ttl)
        owner = inv.order_owner(order.order_id)
        made: list[o.ReservedLine] = []
        try:
            for r in ff.planned_reservations(order, self.reservation_key):
                got = await self.inventory.reserve(r.product_id, r.reservation_id, r.quantity, expires_at, owner,
                                                   correlation_id=order.order_id)
                made.append(o.ReservedLine(r.product_id, got.reservation_id, got.quantity))
                if made[-1] != r:
                    raise inv.ReservationIdConflict(r.reservation_id)
                if got.outcome is not inv.Outcome.ACTIVE:  # a retry after the hold lapsed holds nothing
                    raise inv.ReservationNotActive(r.reservation_id, got.outcome)
        except _BUSINESS:
            # Give back what this order already holds before the step counts as failed.
            await self._release_all(order, void=False)
            raise
        return sg.StepResult(True), ff.StepData(reservations=tuple(made))

    async def confirm_order(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        owner = inv.order_owner(order.order_id)
        for r in ff.held_reservations(order, self.reservation_key):
            await self.inventory.commit(r.product_id, r.reservation_id, owner, correlation_id=order.order_id)
        return sg.StepResult(True), ff.StepData()

    async def release_inventory(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        await self._release_all(order, void=True)
        # The order's stream records a release only where it recorded the reservation.
        return sg.StepResult(True, effective=bool(order.reservations)), ff.StepData()

    async def _release_all(self, order: o.Order, void: bool) -> None:
        """Give back what the order holds. With ``void`` (the compensation), an id of this order's that no
        reservation has yet is closed, so that a reserve still under way for the order (sent by another live
        instance of its shard) holds nothing when it lands; ids of an earlier scheme are only given back."""
        owner = inv.order_owner(order.order_id)
        # Reservations made under ids of an earlier scheme (or secret) are given back too: the owner check
        # of ``undo`` leaves alone whatever is not this order's.
        held = ff.held_reservations(order, self.reservation_key)
        earlier = () if order.reservations else ff.legacy_reservations(order)
        for r in (*held, *earlier):
            try:
                await self.inventory.undo(r.product_id, r.reservation_id, owner, order.order_id, void and r in held)
            except inv.UnknownProduct:
                continue

    async def process_payment(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        result = await self.payments.charge(ff.step_key(saga.saga_id, sg.Step.PROCESS_PAYMENT), order.payment_token,
                                            order.total_amount, action.run)
        return _result(result), ff.StepData(payment_id=result.reference)

    async def refund_payment(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        result = await self.payments.refund(ff.step_key(saga.saga_id, sg.Step.PROCESS_PAYMENT),
                                            ff.step_key(saga.saga_id, sg.Step.REFUND_PAYMENT), action.run)
        return _result(result), ff.StepData(payment_id=result.reference)

    async def create_shipment(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        result = await self.shipping.create(ff.step_key(saga.saga_id, sg.Step.CREATE_SHIPMENT), order.order_id,
                                            order.shipping_address, action.run)
        return _result(result), ff.StepData(shipment_id=result.reference)

    async def cancel_shipment(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        result = await self.shipping.cancel(ff.step_key(saga.saga_id, sg.Step.CREATE_SHIPMENT),
                                            ff.step_key(saga.saga_id, sg.Step.CANCEL_SHIPMENT), action.run)
        return _result(result), ff.StepData(shipment_id=result.reference)

    async def cancel_order(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> Outcome:
        return sg.StepResult(True), ff.StepData()


def _result(r: ProviderResult) -> sg.StepResult:
    return sg.StepResult(r.ok, retryable=r.retryable, error=r.error, effective=r.effective)
