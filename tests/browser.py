"""A headless Chromium for the browser tests: Debian's ``chromium`` and ``chromium-driver``.

A browser download at install time is not possible on these machines, so
Selenium drives the system's. Without it the tests skip, except in CI
(``CI`` set), where they fail: CI installs it. Shared by the admin's tests
and NetBox's (tests_netbox/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

IMPLICIT_WAIT = 5


def find_chromium() -> tuple[str, str] | None:
    """The paths of Chromium and its driver, or ``None`` when either is missing."""
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    """Skip without Chromium, except in CI: there a missing browser is a failure."""
    found = find_chromium()
    if found is None:
        message = (
            "chromium or chromedriver is not installed "
            "(Debian: apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser tests.")
        pytest.skip(message)
    return found


@contextmanager
def headless_chromium(width: int = 1500, height: int = 640) -> Iterator[WebDriver]:
    """Chromium and its driver, quit (both processes gone) on the way out."""
    chromium, chromedriver = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.implicitly_wait(IMPLICIT_WAIT)
        yield driver
    finally:
        driver.quit()


def absent(browser: WebDriver, by: str, value: str) -> bool:
    """No such element on the page as loaded: no implicit wait for one to appear."""
    browser.implicitly_wait(0)
    try:
        return browser.find_elements(by, value) == []
    finally:
        browser.implicitly_wait(IMPLICIT_WAIT)
