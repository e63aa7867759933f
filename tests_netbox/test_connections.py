"""The Connections tab of the Branch page and the plugin's API, in this process running as NetBox.

The backends are real sessions of other clients, labelled as the adapter
labels a branch's; the pages and the API read and end them on the server.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from tests_netbox.conftest import Open
from tests_netbox.instance import NetBox

pytestmark = pytest.mark.usefixtures("netbox_process")

API = "/api/plugins/branching-ops/connections/"


def branch(netbox: NetBox, index: int = 0) -> Any:
    from netbox_branching.models import Branch

    return Branch.objects.get(schema_id=netbox.branches[index])


def label(netbox: NetBox, index: int = 0) -> str:
    return f"branch:branch_{netbox.branches[index]}"


def alive(netbox: NetBox) -> set[int]:
    return {pid for pid, *_ in netbox.branch_backends()}


def wait_gone(netbox: NetBox, pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pid in alive(netbox):
        assert time.monotonic() < deadline, f"pid {pid} is still in pg_stat_activity"
        time.sleep(0.01)


def tab(branch: Any) -> str:
    return reverse("plugins:netbox_branching:branch_connections", args=[branch.pk])


def page(response: Any) -> str:
    """The HTML as text (no template context here: this process is NetBox, not a test runner)."""
    return html.unescape(response.content.decode())


def listed(response: Any) -> set[int]:
    return {int(pid) for pid in re.findall(r'<tr id="pid-(\d+)"', page(response))}


@pytest.fixture
def users() -> Iterator[Callable[..., Any]]:
    """``user(name, *actions)``: a user with an ObjectPermission on Branch for ``actions``."""
    from core.models import ObjectType
    from netbox_branching.models import Branch
    from users.models import ObjectPermission
    from users.models import User

    made: list[Any] = []

    def make(name: str, *actions: str) -> Any:
        user = User.objects.create_user(name, password="pw")
        made.append(user)
        if actions:
            permission = ObjectPermission.objects.create(
                name=f"{name} on branches", actions=list(actions)
            )
            permission.object_types.set([ObjectType.objects.get_for_model(Branch)])
            permission.users.add(user)
            made.append(permission)
        return user

    yield make
    for thing in reversed(made):
        thing.delete()
    connections["default"].close()


@pytest.fixture
def admin() -> Client:
    from users.models import User

    client = Client()
    client.force_login(User.objects.get(username="admin"))
    return client


def test_the_tab_lists_the_branch_backends_with_a_count(
    netbox: NetBox, open_backend: Open, admin: Client
) -> None:
    first = open_backend(label(netbox)).info.backend_pid
    second = open_backend(label(netbox)).info.backend_pid
    other = open_backend(label(netbox, 1)).info.backend_pid
    open_backend("netbox")  # not a branch's

    branch_page = admin.get(branch(netbox).get_absolute_url())
    response = admin.get(tab(branch(netbox)))

    assert response.status_code == 200
    assert listed(response) == {first, second}
    assert other not in listed(response)
    assert re.search(r"Connections\s*<span[^>]*>\s*2\s*</span>", page(branch_page))


def test_terminate_after_the_confirmation(
    netbox: NetBox, open_backend: Open, admin: Client
) -> None:
    pid = open_backend(label(netbox)).info.backend_pid
    stays = open_backend(label(netbox)).info.backend_pid
    the_branch = branch(netbox)

    asked = admin.post(tab(the_branch), {"pk": [str(pid)]})

    assert asked.status_code == 200
    assert f"pid {pid}:" in page(asked)
    assert {pid, stays} <= alive(netbox)  # nothing ends before the confirmation

    done = admin.post(tab(the_branch), {"pk": [str(pid)], "confirm": "true"}, follow=True)

    assert done.redirect_chain == [(tab(the_branch), 302)]
    assert f"Terminated 1 connection(s) of branch {the_branch}: pid {pid}." in page(done)
    wait_gone(netbox, pid)
    assert stays in alive(netbox)


def test_forged_pids_end_nothing_they_should_not(
    netbox: NetBox, open_backend: Open, admin: Client
) -> None:
    other_branch = open_backend(label(netbox, 1)).info.backend_pid
    not_branch = open_backend("netbox").info.backend_pid
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (own,) = cursor.fetchone()
    the_branch = branch(netbox)
    forged = sorted([other_branch, not_branch, own])

    done = admin.post(
        tab(the_branch), {"pk": [*map(str, forged), "x"], "confirm": "true"}, follow=True
    )

    assert (
        f"Not terminated: pid {', '.join(map(str, forged))} is not a connection of branch "
        f"{the_branch} (it may have ended), or it is this request's own."
    ) in page(done)
    assert "Terminated" not in page(done)
    assert other_branch in alive(netbox)
    with netbox.monitor() as monitor:
        row = monitor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (not_branch,)
        ).fetchone()
    assert row == (1,)


def test_a_viewer_sees_no_button_and_cannot_terminate(
    netbox: NetBox, open_backend: Open, users: Callable[..., Any]
) -> None:
    pid = open_backend(label(netbox)).info.backend_pid
    client = Client()
    client.force_login(users("viewer", "view"))

    shown = client.get(tab(branch(netbox)))
    forced = client.post(tab(branch(netbox)), {"pk": [str(pid)], "confirm": "true"})

    assert shown.status_code == 200
    assert listed(shown) == {pid}
    assert 'name="pk"' not in page(shown)
    assert forced.status_code == 403
    assert pid in alive(netbox)


def test_the_terminate_permission_is_enough(
    netbox: NetBox, open_backend: Open, users: Callable[..., Any]
) -> None:
    pid = open_backend(label(netbox)).info.backend_pid
    client = Client()
    client.force_login(users("terminator", "view", "terminate_connections"))

    shown = client.get(tab(branch(netbox)))
    client.post(tab(branch(netbox)), {"pk": [str(pid)], "confirm": "true"})

    assert f'name="pk" value="{pid}"' in page(shown)
    wait_gone(netbox, pid)


def test_anonymous_users_are_sent_to_the_login_page(netbox: NetBox) -> None:
    response = Client().get(tab(branch(netbox)))

    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_the_api_lists_and_terminates_with_a_token(netbox: NetBox, open_backend: Open) -> None:
    pid = open_backend(label(netbox)).info.backend_pid
    other = open_backend(label(netbox, 1)).info.backend_pid
    the_branch = branch(netbox)
    client = Client(HTTP_AUTHORIZATION=f"Token {netbox.token}", HTTP_ACCEPT="application/json")

    one = client.get(API, {"branch": the_branch.pk})
    everything = client.get(API)
    ended = client.post(
        API, {"branch": the_branch.pk, "pids": [pid, other]}, content_type="application/json"
    )

    assert one.status_code == 200
    assert [(row["pid"], row["branch_id"]) for row in one.json()] == [(pid, the_branch.pk)]
    assert {pid, other} <= {row["pid"] for row in everything.json()}
    assert ended.status_code == 200
    assert ended.json()["terminated"] == [pid]
    assert ended.json()["refused"] == [other]
    wait_gone(netbox, pid)
    assert other in alive(netbox)


def test_the_api_without_a_token_or_permission_is_refused(
    netbox: NetBox, open_backend: Open, users: Callable[..., Any]
) -> None:
    from users.models import Token

    pid = open_backend(label(netbox)).info.backend_pid
    the_branch = branch(netbox)
    body = {"branch": the_branch.pk, "pids": [pid]}
    Token(user=users("api_viewer", "view"), version=1, token="f" * 40).save()
    viewer = Client(HTTP_AUTHORIZATION=f"Token {'f' * 40}", HTTP_ACCEPT="application/json")

    anonymous = Client(HTTP_ACCEPT="application/json")

    assert anonymous.get(API).status_code == 403
    assert anonymous.post(API, body, content_type="application/json").status_code == 403
    assert viewer.get(API, {"branch": the_branch.pk}).status_code == 200
    assert viewer.post(API, body, content_type="application/json").status_code == 403
    assert pid in alive(netbox)
