from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import Servers


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="commerce-test-") as tmp:
        s = Servers(Path(tmp))
        try:
            yield s
        finally:
            s.stop()
