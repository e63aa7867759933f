"""The branch connections admin through Django's test client, against the suite's PostgreSQL.

The backends are real sessions of other clients (the ``connect`` fixture); the
admin reads and ends them on the server, and the tests read the server back.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections
from django.db.migrations.loader import MigrationLoader
from django.test import Client
from django.urls import reverse

from branching_ops import activity
from tests.backends import BranchBackends
from tests.conftest import Connect

CHANGELIST = "admin:branching_ops_branchconnection_changelist"
TERMINATE = "terminate_connections"


def alive(branch_backends: BranchBackends) -> set[int]:
    """The pids of the test database's branch backends, as the server sees them now."""
    return {
        backend.pid
        for backend in activity.branch_backends(
            branch_backends.monitor, database=branch_backends.dbname, include_own=True
        )
    }


def wait_gone(branch_backends: BranchBackends, pid: int, timeout: float = 10) -> None:
    """A terminated backend leaves pg_stat_activity a moment after it was signalled."""
    deadline = time.monotonic() + timeout
    while pid in alive(branch_backends):
        assert time.monotonic() < deadline, f"pid {pid} is still in pg_stat_activity"
        time.sleep(0.01)


def texts(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def staff(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    return user


@pytest.fixture
def terminator(transactional_db: None) -> Client:
    """A staff member who may view and terminate, without being a superuser."""
    client = Client()
    client.force_login(staff("terminator", "view_branchconnection", "terminate_branchconnection"))
    return client


def confirm(client: Client, *pids: int | str) -> Any:
    return client.post(
        reverse(CHANGELIST),
        {"action": TERMINATE, "_selected_action": [str(pid) for pid in pids], "post": "yes"},
        follow=True,
    )


def test_migrate_creates_the_permissions_without_a_migration(transactional_db: None) -> None:
    """A migration would leave every provisioned NetBox branch "pending migrations"."""
    assert "branching_ops" in MigrationLoader(None).unmigrated_apps
    Permission.objects.filter(content_type__app_label="branching_ops").delete()

    call_command("migrate", verbosity=0)  # without --run-syncdb, as operators run it

    assert set(
        Permission.objects.filter(content_type__app_label="branching_ops").values_list(
            "codename", flat=True
        )
    ) == {"view_branchconnection", "terminate_branchconnection"}


def test_lists_branch_backends_with_their_columns(
    admin_client: Client, connect: Connect, dbname: str
) -> None:
    mine = connect("myproject/branch:alpha", autocommit=False)
    mine.execute("SELECT 1")
    other = connect("branch:beta")
    connect("myproject")  # not a branch
    foreign = connect("branch:gamma", database="postgres")  # another database

    response = admin_client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    rows = {row["backend"].pid: row["backend"] for row in response.context["rows"]}
    assert set(rows) == {mine.info.backend_pid, other.info.backend_pid}
    alpha = rows[mine.info.backend_pid]
    assert (alpha.branch, alpha.state, alpha.application_name) == (
        "alpha",
        "idle in transaction",
        "myproject/branch:alpha",
    )
    assert alpha.query_start is not None
    html = response.content.decode()
    for shown in ("myproject/branch:alpha", "idle in transaction", "beta", dbname):
        assert shown in html
    assert f'value="{foreign.info.backend_pid}"' not in html
    assert "Terminate selected branch connections" in html


def test_filters_by_branch_and_state_and_searches_by_branch(
    admin_client: Client, connect: Connect
) -> None:
    alpha = connect("branch:alpha").info.backend_pid
    busy = connect("branch:beta")
    busy.pgconn.send_query(b"SELECT pg_sleep(60)")
    beta = busy.info.backend_pid

    def shown(query: str) -> set[int]:
        response = admin_client.get(reverse(CHANGELIST) + query)
        return {row["backend"].pid for row in response.context["rows"]}

    assert shown("") == {alpha, beta}
    assert shown("?branch=alpha") == {alpha}
    assert shown("?state=idle") == {alpha}
    assert shown("?state=active") == {beta}
    assert shown("?q=BET") == {beta}
    assert shown("?branch=alpha&state=active") == set()
    response = admin_client.get(reverse(CHANGELIST) + "?state=active")
    active = next(row for row in response.context["rows"] if row["backend"].pid == beta)
    assert active["for"].startswith("0:00:")  # how long its query has run


def test_terminate_through_the_action_and_its_confirmation(
    admin_client: Client, connect: Connect, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha").info.backend_pid
    stays = connect("branch:alpha").info.backend_pid

    asked = admin_client.post(
        reverse(CHANGELIST), {"action": TERMINATE, "_selected_action": [str(pid)]}
    )

    assert asked.status_code == 200
    assert asked.templates[0].name == (
        "admin/branching_ops/branchconnection/terminate_confirmation.html"
    )
    assert [row["backend"].pid for row in asked.context["rows"]] == [pid]
    assert f'name="_selected_action" value="{pid}"' in asked.content.decode()
    assert alive(branch_backends) == {pid, stays}  # nothing ends before the confirmation

    done = confirm(admin_client, pid)

    assert done.redirect_chain == [(reverse(CHANGELIST), 302)]
    assert texts(done) == [f"Terminated 1 branch connection(s): pid {pid} (alpha)."]
    wait_gone(branch_backends, pid)
    assert alive(branch_backends) == {stays}
    assert pid not in {row["backend"].pid for row in done.context["rows"]}


def test_get_changes_nothing(
    admin_client: Client, connect: Connect, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha").info.backend_pid

    response = admin_client.get(
        reverse(CHANGELIST), {"action": TERMINATE, "_selected_action": str(pid), "post": "yes"}
    )

    assert response.status_code == 200
    assert alive(branch_backends) == {pid}


def test_post_needs_the_csrf_token(
    admin_user: User, connect: Connect, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha").info.backend_pid
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = client.post(
        reverse(CHANGELIST), {"action": TERMINATE, "_selected_action": str(pid), "post": "yes"}
    )

    assert response.status_code == 403
    assert alive(branch_backends) == {pid}


def test_anonymous_users_are_sent_to_the_login_page(
    client: Client, transactional_db: None
) -> None:
    response = client.get(reverse(CHANGELIST))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={reverse(CHANGELIST)}"


def test_staff_without_the_view_permission_is_refused(
    client: Client, transactional_db: None
) -> None:
    client.force_login(staff("nobody"))

    assert client.get(reverse(CHANGELIST)).status_code == 403


def test_viewers_see_no_action_and_cannot_terminate(
    client: Client, connect: Connect, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha").info.backend_pid
    client.force_login(staff("viewer", "view_branchconnection"))

    listed = client.get(reverse(CHANGELIST))
    asked = client.post(reverse(CHANGELIST), {"action": TERMINATE, "_selected_action": str(pid)})
    forced = client.post(
        reverse(CHANGELIST), {"action": TERMINATE, "_selected_action": str(pid), "post": "yes"}
    )

    assert listed.status_code == 200
    assert [row["backend"].pid for row in listed.context["rows"]] == [pid]
    assert "Terminate selected" not in listed.content.decode()
    assert 'name="_selected_action"' not in listed.content.decode()
    assert (asked.status_code, forced.status_code) == (403, 403)
    assert alive(branch_backends) == {pid}


def test_the_terminate_permission_is_enough(
    terminator: Client, connect: Connect, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha").info.backend_pid

    done = confirm(terminator, pid)

    assert texts(done) == [f"Terminated 1 branch connection(s): pid {pid} (alpha)."]
    wait_gone(branch_backends, pid)


def test_forged_pids_end_nothing_they_should_not(
    terminator: Client, connect: Connect, branch_backends: BranchBackends, dbname: str
) -> None:
    target = connect("branch:alpha").info.backend_pid
    stays = connect("branch:alpha").info.backend_pid
    not_branch = connect("myproject")
    foreign = connect("branch:alpha", database="postgres")
    ended = connect("branch:beta")
    ended_pid = ended.info.backend_pid
    ended.close()
    wait_gone(branch_backends, ended_pid)
    # The test client serves the request on this thread: its own connection.
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (own,) = cursor.fetchone()
    forged = sorted([not_branch.info.backend_pid, foreign.info.backend_pid, ended_pid, own])

    done = confirm(terminator, target, *forged, "1 OR 1=1")

    assert texts(done) == [
        f"Terminated 1 branch connection(s): pid {target} (alpha).",
        f"Not terminated: pid {', '.join(map(str, forged))} is not a branch connection of "
        f"database {dbname!r} (it may have ended), or it is this request's own.",
    ]
    wait_gone(branch_backends, target)
    assert alive(branch_backends) == {stays}
    assert not not_branch.closed
    not_branch.execute("SELECT 1")
    foreign.execute("SELECT 1")
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone() == (own,)


def test_nothing_selected_or_only_garbage(terminator: Client, transactional_db: None) -> None:
    expected = (
        "Items must be selected in order to perform actions on them. No items have been changed."
    )
    assert texts(confirm(terminator)) == [expected]
    assert texts(confirm(terminator, "abc", "-1")) == [expected]


def test_an_unknown_action_is_no_action(
    terminator: Client, connect: Connect, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha").info.backend_pid

    response = terminator.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": str(pid), "post": "yes"},
        follow=True,
    )

    assert texts(response) == ["No action selected."]
    assert alive(branch_backends) == {pid}


def test_backends_the_role_may_not_signal_are_not_terminated(
    terminator: Client, connect: Connect, branch_backends: BranchBackends
) -> None:
    mine = connect("branch:alpha").info.backend_pid
    superuser = connect("branch:alpha", user="postgres").info.backend_pid

    done = confirm(terminator, mine, superuser)

    assert texts(done) == [
        f"Role 'app' may not terminate pid {superuser}; nothing was terminated."
    ]
    assert alive(branch_backends) == {mine, superuser}


def test_a_backend_that_ends_between_the_pages_is_reported(
    terminator: Client, connect: Connect, branch_backends: BranchBackends, dbname: str
) -> None:
    leaving = connect("branch:alpha")
    pid = leaving.info.backend_pid
    asked = terminator.post(
        reverse(CHANGELIST), {"action": TERMINATE, "_selected_action": str(pid)}
    )
    assert [row["backend"].pid for row in asked.context["rows"]] == [pid]
    leaving.close()
    wait_gone(branch_backends, pid)

    done = confirm(terminator, pid)

    assert texts(done) == [
        f"Not terminated: pid {pid} is not a branch connection of database {dbname!r} "
        "(it may have ended), or it is this request's own."
    ]
