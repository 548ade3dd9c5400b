"""Helpers of the browser tests: signing in, opening a console page and waiting until it is ready,
screenshots and the browser's console log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "test-admin-token"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"  # not committed (.gitignore)


def wait(driver: WebDriver, timeout: float = 30.0, poll: float = 0.2) -> WebDriverWait[WebDriver]:
    """A wait that also retries when a page re-rendered the element it was reading."""
    return WebDriverWait(driver, timeout, poll_frequency=poll, ignored_exceptions=[StaleElementReferenceException])


def by_testid(name: str, extra: str = "") -> tuple[str, str]:
    return By.CSS_SELECTOR, f'[data-testid="{name}"]{extra}'


def ready(driver: WebDriver, page: str, extra: str = "", timeout: float = 30.0) -> WebElement:
    """The page's root once it has shown its data (``data-state="ready"``)."""
    return wait(driver, timeout).until(ec.presence_of_element_located(by_testid(page, f'[data-state="ready"]{extra}')),
                                       f"the console's {page} page did not get ready")


def visible(driver: WebDriver, name: str, timeout: float = 30.0) -> WebElement:
    return wait(driver, timeout).until(ec.visibility_of_element_located(by_testid(name)), f"{name} is not shown")


def sign_in(driver: WebDriver, console: str, token: str = TOKEN) -> None:
    """Open the console signed out, then enter ``token``; with the admin token, wait for the overview."""
    driver.get(console)
    driver.execute_script("window.sessionStorage.clear()")
    driver.refresh()
    field = visible(driver, "token-input")
    field.clear()
    field.send_keys(token)
    driver.find_element(*by_testid("login-button")).click()
    if token == TOKEN:
        ready(driver, "overview")


def open_page(driver: WebDriver, console: str, route: str, page: str, extra: str = "") -> WebElement:
    """Go to ``#/route`` of a signed-in console and wait until its ``page`` is ready."""
    driver.get(f"{console}#/{route}")
    return ready(driver, page, extra)


def texts(driver: WebDriver, name: str, attribute: str) -> list[str | None]:
    return [e.get_attribute(attribute) for e in driver.find_elements(*by_testid(name))]


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def severe(driver: WebDriver) -> list[dict[str, Any]]:
    """The console log's errors since the last call (reading the log empties it)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
