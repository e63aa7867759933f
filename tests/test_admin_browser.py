"""The branch connections admin in a real, headless Chromium, against a live server.

Chromium as :mod:`tests.browser` finds it: skipped without it unless ``CI``
is set. With ``BRANCHING_OPS_TEST_SCREENSHOTS=docs/images`` the test saves
the page the docs show.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.backends import BranchBackends
from tests.browser import absent
from tests.browser import headless_chromium
from tests.browser import require_chromium
from tests.conftest import Connect
from tests.test_admin import CHANGELIST
from tests.test_admin import alive
from tests.test_admin import staff
from tests.test_admin import wait_gone


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module."""
    with headless_chromium() as driver:
        yield driver


def log_in(browser: WebDriver, live_server: LiveServer, username: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}{reverse('admin:login')}?next={reverse(CHANGELIST)}")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys("pw")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.ID, "changelist")


@pytest.mark.slow
def test_log_in_see_terminate_and_see_it_gone(
    browser: WebDriver,
    live_server: LiveServer,
    connect: Connect,
    branch_backends: BranchBackends,
) -> None:
    User.objects.create_superuser("oncall", password="pw")
    target = connect("myproject/branch:feature_x").info.backend_pid
    busy = connect("myproject/branch:release_1_4")
    busy.pgconn.send_query(b"SELECT pg_sleep(60)")
    stays = {target, busy.info.backend_pid, connect("myproject/branch:hotfix").info.backend_pid}

    log_in(browser, live_server, "oncall")
    row = browser.find_element(By.ID, f"pid-{target}")
    assert row.find_element(By.CLASS_NAME, "field-branch").text == "feature_x"
    assert row.find_element(By.CLASS_NAME, "field-state").text == "idle"

    row.find_element(By.CLASS_NAME, "action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("terminate_connections")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    listed = browser.find_element(By.ID, "to-terminate").text
    assert f"pid {target}: branch feature_x" in listed
    assert alive(branch_backends) == stays  # nothing ends before the confirmation

    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    message = browser.find_element(By.CSS_SELECTOR, "ul.messagelist li.success").text
    assert message == f"Terminated 1 branch connection(s): pid {target} (feature_x)."
    assert absent(browser, By.ID, f"pid-{target}")
    wait_gone(branch_backends, target)
    assert alive(branch_backends) == stays - {target}
    if directory := os.environ.get("BRANCHING_OPS_TEST_SCREENSHOTS"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(directory) / "admin-branch-connections.png"))


@pytest.mark.slow
def test_anonymous_users_see_the_login_page(browser: WebDriver, live_server: LiveServer) -> None:
    browser.delete_all_cookies()
    browser.get(live_server.url + reverse(CHANGELIST))

    assert browser.current_url == (
        f"{live_server.url}{reverse('admin:login')}?next={reverse(CHANGELIST)}"
    )
    browser.find_element(By.NAME, "username")


@pytest.mark.slow
def test_a_viewer_is_offered_no_action(
    browser: WebDriver,
    live_server: LiveServer,
    connect: Connect,
    branch_backends: BranchBackends,
) -> None:
    staff("viewer", "view_branchconnection")
    pid = connect("branch:alpha").info.backend_pid

    log_in(browser, live_server, "viewer")

    browser.find_element(By.ID, f"pid-{pid}")
    assert absent(browser, By.NAME, "action")
    assert absent(browser, By.CLASS_NAME, "action-select")
    assert alive(branch_backends) == {pid}


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_chromium_fails_in_ci_and_skips_elsewhere(
    ci: str, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.browser.find_chromium", lambda: None)
    monkeypatch.setenv("CI", ci)

    with pytest.raises(outcome, match="chromium or chromedriver is not installed"):
        require_chromium()
