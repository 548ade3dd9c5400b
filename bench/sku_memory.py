"""The memory a SKU's sales take while it remembers them (SALE_RETENTION): SKUs built in this process by the
domain's own ``evolve``, one reservation and its commit per sale, round robin, and the process's RSS after
each tenth of the sales. Prints the RSS per sale between the first tenth and the end.

    python -m bench.sku_memory [--products 10] [--sales 100000]

No database, no Ray: the figure is the SKU state's own (domain/inventory.py, ``Reservations``), the part of
an inventory shard's memory that grows with the sales it holds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import uuid
from decimal import Decimal

import psutil

from domain import inventory as inv
from domain.events import DomainEvent, Metadata, Recorded

NOW = dt.datetime.now(dt.UTC)


def recorded(product_id: uuid.UUID, version: int, event: DomainEvent) -> Recorded:
    return Recorded(product_id, inv.AGGREGATE_TYPE, version, event,
                    Metadata(uuid.uuid4(), uuid.uuid4(), product_id, None, NOW))


def rss_mib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main(products: int, sales: int) -> None:
    skus: list[inv.Sku] = []
    for _ in range(products):
        pid = uuid.uuid4()
        sku = inv.evolve(None, recorded(pid, 1, inv.StockSet(pid, sales, Decimal("9.99"), "bench")))
        assert sku is not None
        skus.append(sku)
    tenth, marks = sales // 10, []
    for n in range(1, sales + 1):
        k = n % products
        sku = skus[k]
        rid, owner = uuid.uuid4(), inv.order_owner(uuid.uuid4())
        reserved = inv.StockReserved(rid, 1, NOW + dt.timedelta(minutes=15), owner)
        after = inv.evolve(inv.evolve(sku, recorded(sku.product_id, sku.version + 1, reserved)),
                           recorded(sku.product_id, sku.version + 2, inv.ReservationCommitted(rid, 1)))
        assert after is not None
        skus[k] = after
        if n % tenth == 0:
            marks.append(rss_mib())
    print(f"{products} SKUs, {sales:,} sales held; RSS (MiB) after each tenth:", " ".join(f"{m:.1f}" for m in marks))
    print(f"RSS per sale from the first tenth to the end: {(marks[-1] - marks[0]) * 2**20 / (sales - tenth):.0f} B")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--products", type=int, default=10, help="SKUs (default 10)")
    parser.add_argument("--sales", type=int, default=100_000, help="sales over all of them (default 100,000)")
    options = parser.parse_args()
    main(options.products, options.sales)
