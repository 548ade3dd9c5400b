"""The service refuses to start with another server secret than the one its database was used with."""

from __future__ import annotations

import pytest

from commerce.runtime import check_server_secret, run_migrations
from commerce.settings import Settings, SettingsError
from tests.support import Servers, create_database, drop_database


async def test_a_changed_server_secret_is_refused_and_the_known_one_accepted(servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_secret")
    try:
        await run_migrations(dsn)
        await check_server_secret(Settings(database_url=dsn, server_secret="first"))
        await check_server_secret(Settings(database_url=dsn, server_secret="first"))
        with pytest.raises(SettingsError, match="restore it"):
            await check_server_secret(Settings(database_url=dsn, server_secret="second"))
    finally:
        await drop_database(servers.database_url, dsn)
