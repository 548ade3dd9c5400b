"""The prices an order shard puts on new orders: the catalog's, remembered between orders.

Reading the catalog is a call to an inventory shard for every order, where a price changes rarely. So an
order shard remembers each price with the version of the SKU it came from. An inventory shard that sets
a price tells every order shard the new price and version before it answers (so an order placed after
a price change has that price); a version older than the one remembered is ignored, so a read that was
under way while the price changed cannot bring the old price back. Should an order shard miss such a
message (it was busy past the inventory shard's wait), it reads the catalog again once a price is
PRICE_TTL old, counted from when the read that brought it was sent: an old price outlives its change by
at most that long.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal

from actors.views import StockView

PRICE_TTL = 1.0  # seconds a remembered price is used without reading the catalog again
PRICE_REFRESH = 0.5  # seconds after which a price in use is read again, in the background
MAX_PRICES = 10_000  # products remembered (the least recently used go first)

log = logging.getLogger(__name__)


class Prices:
    def __init__(self, read: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, StockView]]],
                 ttl: float = PRICE_TTL, size: int = MAX_PRICES, clock: Callable[[], float] = time.monotonic,
                 refresh: float = PRICE_REFRESH) -> None:
        self._read = read
        self.ttl = ttl
        self.refresh = refresh
        self.size = size
        self._clock = clock
        self._known: OrderedDict[uuid.UUID, tuple[Decimal, int, float]] = OrderedDict()  # price, version, since
        self._refreshing: set[uuid.UUID] = set()  # read again in the background just now
        self._refreshes: set[asyncio.Task[None]] = set()  # under way: kept, so that none is collected early

    def learn(self, product_id: uuid.UUID, price: Decimal, version: int, since: float | None = None) -> None:
        """The SKU's price at this version (from a read or from the inventory shard that changed it), as it
        stood at ``since`` (a read's: when it was sent, since the SKU answered at some point after)."""
        known = self._known.get(product_id)
        if known is not None and version < known[1]:
            return
        self._known[product_id] = (price, version, self._clock() if since is None else since)
        self._known.move_to_end(product_id)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    async def of(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Decimal]:
        """Each product's price; the catalog is read for those not known (or known too long), and raises
        for a product that does not exist."""
        now = self._clock()
        prices: dict[uuid.UUID, Decimal] = {}
        ageing: list[uuid.UUID] = []
        for pid in product_ids:
            known = self._known.get(pid)
            if known is not None and now - known[2] < self.ttl:
                prices[pid] = known[0]
                self._known.move_to_end(pid)
                if now - known[2] >= self.refresh and pid not in self._refreshing:
                    ageing.append(pid)
        if ageing:
            self._read_again(list(dict.fromkeys(ageing)), now)
        missing = [pid for pid in dict.fromkeys(product_ids) if pid not in prices]
        if missing:
            for pid, stock in (await self._read(missing)).items():
                self.learn(pid, stock.price, stock.version, since=now)
                prices[pid] = self._known[pid][0]  # the read's, or a newer one told meanwhile
        return prices

    def _read_again(self, product_ids: list[uuid.UUID], sent: float) -> None:
        self._refreshing.update(product_ids)
        task = asyncio.get_running_loop().create_task(self._refresh(product_ids, sent))
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh(self, product_ids: list[uuid.UUID], sent: float) -> None:
        try:
            for pid, stock in (await self._read(product_ids)).items():
                self.learn(pid, stock.price, stock.version, since=sent)
        except Exception as e:  # the price known ages on: once PRICE_TTL old it is read in an order's time, which
            # then sees the error (an unknown product, an inventory shard down)
            log.debug("reading prices again failed: %s: %s", type(e).__name__, e)
        finally:
            self._refreshing.difference_update(product_ids)
