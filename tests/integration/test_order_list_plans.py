"""A customer's list of orders, and the orders of one status, stay on their indexes whatever plan PostgreSQL keeps
for the statement (its generic plan, from the sixth execution on a connection; ``force_generic_plan`` makes it
so at once): with many orders of other customers, a customer's page must not walk every order in creation
order, as a statement that tested each filter for NULL did."""

from __future__ import annotations

import uuid

from store.queries import list_orders
from tests.integration.plans import assert_reads_through, generic_plans_over, prepared_on
from tests.support import Servers, create_database, drop_database


async def test_a_customers_orders_and_the_orders_of_a_status_are_read_through_their_indexes(servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_order_plans")
    customer = uuid.uuid4()
    pool = await generic_plans_over(dsn, "order_views", """
        INSERT INTO order_views (order_id, customer_id, status, total_amount, created_at, updated_at, version,
                                 saga_id, items)
        SELECT gen_random_uuid(), CASE WHEN i IN (150000, 190000) THEN $1 ELSE gen_random_uuid() END,
               CASE WHEN i % 100 = 0 THEN 'CANCELLED' ELSE 'CONFIRMED' END, 1, NOW() - make_interval(secs => i),
               NOW(), 1, gen_random_uuid(), '[]'::jsonb
        FROM generate_series(1, 200000) i""", customer)
    try:
        mine, _ = await list_orders(pool, customer_id=customer, status=None, limit=50, cursor=None)
        assert len(mine) == 2
        _, following = await list_orders(pool, customer_id=customer, status=None, limit=1, cursor=None)
        assert following is not None
        rest, _ = await list_orders(pool, customer_id=customer, status=None, limit=50, cursor=following)
        assert [r["order_id"] for r in rest] == [mine[1]["order_id"]]
        cancelled, _ = await list_orders(pool, customer_id=None, status="CANCELLED", limit=50, cursor=None)
        assert {r["status"] for r in cancelled} == {"CANCELLED"} and len(cancelled) == 50
        async with pool.acquire() as conn:
            prepared = await prepared_on(conn, "order_views")
            for statement in prepared:
                index = "order_views_customer" if "customer_id =" in statement["statement"] else "order_views_status"
                await assert_reads_through(conn, statement, {
                    "uuid": f"'{customer}'", "character varying": "'CANCELLED'", "text": "'CANCELLED'",
                    "timestamp with time zone": "NOW()", "bigint": "51", "integer": "51"}, index, "order_views_created")
            assert len(prepared) == 3, [p["statement"] for p in prepared]  # a customer's, with a cursor, a status
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)
