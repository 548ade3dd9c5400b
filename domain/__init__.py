"""Pure business logic of the commerce service: aggregates, events, the saga state machine.

Nothing here performs I/O or imports ray, asyncpg, redis or fastapi; time and ids are inputs.
"""
