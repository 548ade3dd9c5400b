"""The thin client of the actor layer: routes each command to its shard and hides every Ray call.

serve_app.py and the tests use it; so do order shards, to reach the inventory shards. A call that
does not answer within the timeout, or reaches a dead actor after Ray's own retries, raises
:class:`ServiceUnavailable`; business outcomes come back as the domain's typed errors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from actors.calls import ActorLost, ActorRef, ServiceTimeout, ServiceUnavailable, call
from actors.lanes import Lanes
from actors.routing import inventory_shard_name, order_shard_name, shard_of
from actors.views import Cancelled, OrderView, Placed, ReservationView, SagaState, StockView
from actors.watch import Watch
from domain import inventory

__all__ = ["BATCHED_COMMANDS", "BATCHED_ORDER_CALLS", "ActorLost", "ActorRef", "InventoryClient", "Lanes",
           "OrderClient", "ServiceTimeout", "ServiceUnavailable", "call"]

BATCHED_COMMANDS = frozenset({"reserve", "commit", "undo"})  # the SKU commands of the sagas
BATCHED_ORDER_CALLS = {"create_order": "commands", "get_order": "reads"}  # the calls of an order shard, by lane
# Batches of the ingress's calls under way to one order shard at once, per lane (actors.call_batches; the
# sagas' SKU commands keep one). With one, a new order waited for the whole round trip of the batch before it,
# its commit included; with two, the next batch reaches the shard while that commit is under way and its
# records share the next flush. In four alternating pairs the acknowledgement's p99 at half the peak rate was
# 66-277 ms against 198-860 ms with one, the peak rate the same or a little higher; a later comparison of
# several changes together saw no difference beyond the machine's noise (docs/benchmarks.md, eighteenth round).
ORDER_BATCHES_IN_FLIGHT = 2


class InventoryClient:
    """The inventory shards' client. With ``batched`` (an order shard's), the SKU commands of the sagas
    (reserve, commit, undo) and the catalog reads go to each shard in batches: the reads apart from the
    commands, so that a read never waits for a hot SKU's commit."""

    def __init__(self, namespace: str, shards: int, timeout: float = 30.0, batched: bool = False,
                 watch: Watch | None = None) -> None:
        self.refs = [ActorRef(inventory_shard_name(i), namespace) for i in range(shards)]
        self.timeout = timeout
        self._lanes = None
        if batched:  # withdrawals that fail are the watch's to report (the owner's health)
            self._lanes = Lanes(self.refs, ("commands", "reads"), timeout, watch or Watch("inventory calls"))

    def _ref(self, product_id: uuid.UUID) -> ActorRef:
        return self.refs[shard_of(product_id, len(self.refs))]

    async def _call(self, product_id: uuid.UUID, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._lanes is not None and method in BATCHED_COMMANDS and not kwargs:
            return await self._lanes.call(shard_of(product_id, len(self.refs)), "commands", method, *args)
        return await call(self._ref(product_id), method, *args, timeout=self.timeout, withdraw=True, **kwargs)

    async def set_stock(self, product_id: uuid.UUID, on_hand: int, price: str, name: str | None,
                        expected_version: int | None = None) -> StockView:
        """One change under one command id, however often this client or Ray sends it again (a shard lost
        meanwhile): the SKU applies it once (``inv.decide_set_stock``)."""
        result: StockView = await self._call(product_id, "set_stock", product_id, on_hand, price, name,
                                             expected_version, uuid.uuid4())
        return result

    async def get_stock(self, product_id: uuid.UUID) -> StockView:
        result: StockView = await self._call(product_id, "get_stock", product_id)
        return result

    async def catalog(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, StockView]:
        by_shard: dict[int, list[uuid.UUID]] = {}
        for pid in dict.fromkeys(product_ids):
            by_shard.setdefault(shard_of(pid, len(self.refs)), []).append(pid)
        if self._lanes is not None:
            lanes = self._lanes
            parts = await asyncio.gather(*[lanes.call(i, "reads", "catalog", pids) for i, pids in by_shard.items()])
        else:
            parts = await asyncio.gather(*[
                call(self.refs[i], "catalog", pids, timeout=self.timeout) for i, pids in by_shard.items()])
        return {pid: stock for part in parts for pid, stock in part.items()}

    async def prices(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Decimal]:
        """Today's price of each product that exists; unknown products are left out."""
        async def price(pid: uuid.UUID) -> tuple[uuid.UUID, Decimal | None]:
            try:
                return pid, (await self.get_stock(pid)).price
            except inventory.UnknownProduct:
                return pid, None

        found = await asyncio.gather(*[price(pid) for pid in dict.fromkeys(product_ids)])
        return {pid: p for pid, p in found if p is not None}

    async def reserve(self, product_id: uuid.UUID, reservation_id: uuid.UUID, quantity: int, expires_at: dt.datetime,
                      owner: str, expected_version: int | None = None,
                      correlation_id: uuid.UUID | None = None, held_before: bool = False) -> ReservationView:
        result: ReservationView = await self._call(product_id, "reserve", product_id, reservation_id, quantity,
                                                   expires_at, owner, expected_version, correlation_id, held_before)
        return result

    async def release(self, product_id: uuid.UUID, reservation_id: uuid.UUID, caller: str, admin: bool = False,
                      correlation_id: uuid.UUID | None = None) -> StockView:
        result: StockView = await self._call(product_id, "release", product_id, reservation_id, caller, admin,
                                               correlation_id)
        return result

    async def undo(self, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                   correlation_id: uuid.UUID | None = None, void: bool = False) -> StockView:
        result: StockView = await self._call(product_id, "undo", product_id, reservation_id, owner, correlation_id,
                                             void)
        return result

    async def commit(self, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                     correlation_id: uuid.UUID | None = None) -> StockView:
        result: StockView = await self._call(product_id, "commit", product_id, reservation_id, owner, correlation_id)
        return result


class OrderClient:
    """The order shards' client. With ``batched`` (the ingress's), new orders and order reads go to each shard
    in batches, the reads apart; a call that left runs to the end, as an unbatched one does."""

    def __init__(self, namespace: str, shards: int, timeout: float = 30.0, batched: bool = False) -> None:
        self.refs = [ActorRef(order_shard_name(i), namespace) for i in range(shards)]
        self.timeout = timeout
        self._lanes = Lanes(self.refs, ("commands", "reads"), timeout, None, ORDER_BATCHES_IN_FLIGHT) if batched else None

    async def _call(self, order_id: uuid.UUID, method: str, *args: Any) -> Any:
        shard = shard_of(order_id, len(self.refs))
        if self._lanes is not None and method in BATCHED_ORDER_CALLS:
            return await self._lanes.call(shard, BATCHED_ORDER_CALLS[method], method, *args)
        return await call(self.refs[shard], method, *args, timeout=self.timeout)

    async def create_order(self, order_id: uuid.UUID, customer_id: uuid.UUID, items: list[tuple[uuid.UUID, int]],
                           shipping_address: dict[str, str], payment_token: str, new: bool = False) -> Placed:
        result: Placed = await self._call(order_id, "create_order", order_id, customer_id, items, shipping_address,
                                          payment_token, new)
        return result

    async def get_order(self, order_id: uuid.UUID) -> OrderView:
        result: OrderView = await self._call(order_id, "get_order", order_id)
        return result

    # A command id made once per call: Ray's own retries re-send it, so the command applies once.

    async def cancel_order(self, order_id: uuid.UUID, reason: str, command_id: uuid.UUID | None = None) -> Cancelled:
        result: Cancelled = await self._call(order_id, "cancel_order", order_id, reason, command_id or uuid.uuid4())
        return result

    async def retry_saga(self, order_id: uuid.UUID, command_id: uuid.UUID | None = None) -> SagaState:
        result: SagaState = await self._call(order_id, "retry_saga", order_id, command_id or uuid.uuid4())
        return result

    async def compensate_saga(self, order_id: uuid.UUID, reason: str,
                              command_id: uuid.UUID | None = None) -> SagaState:
        result: SagaState = await self._call(order_id, "compensate_saga", order_id, reason,
                                             command_id or uuid.uuid4())
        return result
