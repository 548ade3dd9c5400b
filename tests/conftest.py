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


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (starting it takes seconds)."""
    import os

    import ray

    from commerce.runtime import SERVE_ENV

    os.environ.update(SERVE_ENV)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(SERVE_ENV)})
    yield
    ray.shutdown()
