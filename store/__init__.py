"""Persistence: the PostgreSQL event store, read models, saga and idempotency stores, Redis carts,
provider ledgers, migrations and the embedded servers used when no external ones are configured."""
