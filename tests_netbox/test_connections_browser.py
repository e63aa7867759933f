"""The Connections tab of a Branch in a real, headless Chromium, against a running NetBox.

NetBox (with the adapter) serves through ``netbox runserver --insecure``, which
serves its static files too; Chromium as :mod:`tests.browser` finds it. With
``BRANCHING_OPS_TEST_SCREENSHOTS=docs/images`` the test saves the page the
docs show.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from branching_ops.testing.processes import free_port
from branching_ops.testing.processes import stop_process
from branching_ops.testing.processes import wait_until
from tests.browser import absent
from tests.browser import headless_chromium
from tests_netbox.conftest import Open
from tests_netbox.instance import BIN
from tests_netbox.instance import NetBox
from tests_netbox.instance import Setting
from tests_netbox.test_connections import alive
from tests_netbox.test_connections import branch
from tests_netbox.test_connections import label
from tests_netbox.test_connections import tab
from tests_netbox.test_connections import wait_gone

pytestmark = pytest.mark.usefixtures("netbox_process")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(netbox: NetBox) -> Iterator[str]:
    """NetBox with the adapter on a free port; stopped at the end of the module."""
    port = free_port()
    process = netbox.popen(
        Setting(adapter=True, conn_max_age=0),
        str(BIN / "netbox"),
        "runserver",
        "--insecure",
        "--noreload",
        "--skip-checks",
        f"127.0.0.1:{port}",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/login/"), timeout=120, what="NetBox to serve")
        yield url
    finally:
        stop_process(process, signal.SIGTERM, timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium(1400, 720) as driver:
        yield driver


@pytest.fixture
def oncall() -> Iterator[Any]:
    from users.models import User

    user = User.objects.create_superuser("oncall", "oncall@example.com", password="pw")
    yield user
    user.delete()


def test_log_in_see_terminate_and_see_it_gone(
    netbox: NetBox, server: str, browser: WebDriver, open_backend: Open, oncall: Any
) -> None:
    target = open_backend(label(netbox)).info.backend_pid
    busy = open_backend(label(netbox))
    busy.pgconn.send_query(b"SELECT pg_sleep(60)")
    stays = busy.info.backend_pid
    page = tab(branch(netbox))

    browser.delete_all_cookies()
    browser.get(server + page)
    assert browser.current_url.startswith(f"{server}/login/")
    browser.find_element(By.NAME, "username").send_keys("oncall")
    browser.find_element(By.NAME, "password").send_keys("pw")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    row = browser.find_element(By.ID, f"pid-{target}")
    assert "idle" in row.text
    tabs = browser.find_element(By.CSS_SELECTOR, "ul.nav-tabs").text
    assert "Connections" in tabs

    row.find_element(By.NAME, "pk").click()
    if directory := os.environ.get("BRANCHING_OPS_TEST_SCREENSHOTS"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(directory) / "netbox-branch-connections.png"))
    browser.find_element(By.NAME, "_terminate").click()
    assert f"pid {target}:" in browser.find_element(By.ID, "to-terminate").text
    assert {target, stays} <= alive(netbox)  # nothing ends before the confirmation

    browser.find_element(By.NAME, "_confirm").click()
    browser.find_element(By.ID, f"pid-{stays}")
    assert absent(browser, By.ID, f"pid-{target}")
    assert f"pid {target}." in browser.page_source
    wait_gone(netbox, target)
    assert stays in alive(netbox)
