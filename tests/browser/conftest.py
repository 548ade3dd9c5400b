"""Fixtures of the console's browser tests: Debian's chromium, driven by selenium, on the session's service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.e2e.conftest import ADMIN, http  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless chromium whose console log (``get_log("browser")``) the tests read."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the browser tests need Debian's chromium and its driver; missing: {', '.join(missing)} "
                    "(apt-get install -y chromium chromium-driver, as .ci/run does)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def console(api: str) -> str:
    """The console's URL on the session's service."""
    return f"{api}/console"


@pytest.fixture(scope="session")
def admin(api: str) -> Iterator[httpx.Client]:
    """A blocking admin client, for the conditions that selenium's waits poll."""
    with httpx.Client(base_url=api, timeout=30, headers=ADMIN) as client:
        yield client
