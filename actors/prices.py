"""The prices an order shard puts on new orders: the catalog's, remembered between orders.

Reading the catalog is a call to an inventory shard for every order, where a price changes rarely. So an
order shard remembers each price with the version of the SKU it came from. An inventory shard that sets
a price tells every order shard the new price and version before it answers (so an order placed after
a price change has that price); a version older than the one remembered is ignored, so a read that was
under way while the price changed cannot bring the old price back. Should an order shard miss such a
message (it was busy past the inventory shard's wait), it reads the catalog again once a price is
PRICE_TTL old, counted from when the read that brought it was sent: an old price outlives its change by
at most that long.

That read would hold up the orders that find the price PRICE_TTL old (in a 60 s run at c = 32, 113 new
orders waited 50-94 ms for it while the inventory shards were slow: docs/benchmarks.md, seventh round).
So a price still in use once PRICE_REFRESH old is read again in the background, once per price
remembered; its age too counts from the read's sending. An order waits for a read only when its price
went unused from PRICE_REFRESH to PRICE_TTL, or when the read in the background failed or is slower
than the time left.
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
# Seconds after which a price in use is read again in the background: late in the TTL, so that a price in
# steady use costs about one read per 0.8 s and not two per second, yet early enough for a slow read.
PRICE_REFRESH = 0.8
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
        # The ``since`` of the price each background read was made for: one read per price remembered, so
        # that a catalog failing at once is not asked again by every order until the TTL.
        self._read_for: dict[uuid.UUID, float] = {}
        self._reads: set[asyncio.Task[None]] = set()  # under way: kept, so that none is collected early

    def learn(self, product_id: uuid.UUID, price: Decimal, version: int, since: float | None = None) -> None:
        """The SKU's price at this version (from a read or from the inventory shard that changed it), as it
        stood at ``since`` (a read's: when it was sent, since the SKU answered at some point after). The
        same version read earlier (a slow read coming back after a faster one) changes nothing."""
        since = self._clock() if since is None else since
        known = self._known.get(product_id)
        if known is not None and (version, since) <= (known[1], known[2]):
            return
        self._known[product_id] = (price, version, since)
        self._known.move_to_end(product_id)
        self._read_for.pop(product_id, None)
        while len(self._known) > self.size:
            forgotten, _ = self._known.popitem(last=False)
            self._read_for.pop(forgotten, None)

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
                if now - known[2] >= self.refresh and self._read_for.get(pid) != known[2]:
                    self._read_for[pid] = known[2]
                    ageing.append(pid)
        if ageing:
            task = asyncio.get_running_loop().create_task(self._read_again(ageing, now))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        missing = [pid for pid in dict.fromkeys(product_ids) if pid not in prices]
        if missing:
            for pid, stock in (await self._read(missing)).items():
                self.learn(pid, stock.price, stock.version, since=now)
                prices[pid] = self._known[pid][0]  # the read's, or a newer one told meanwhile
        return prices

    async def _read_again(self, product_ids: list[uuid.UUID], sent: float) -> None:
        try:
            stocks = await self._read(product_ids)
        except Exception as e:
            # The price ages on: an order that finds it PRICE_TTL old reads it in its own time, and that
            # order gets the error (an unknown product, an inventory shard down).
            log.info("reading prices again in the background failed: %s: %s", type(e).__name__, e)
            return
        for pid, stock in stocks.items():
            self.learn(pid, stock.price, stock.version, since=sent)
