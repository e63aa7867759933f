"""The adapter's parts, in this process running as NetBox with the adapter (CONN_MAX_AGE 0)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError
from io import StringIO

import pytest
from django.conf import settings
from django.core.checks import Tags
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.signals import request_finished
from django.core.signals import request_started
from django.db import connections
from django.test import override_settings
from django.utils.connection import ConnectionDoesNotExist

from branching_ops import tracking
from tests_netbox.instance import NetBox
from tests_netbox.instance import Setting

pytestmark = pytest.mark.usefixtures("netbox_process")


@pytest.fixture(autouse=True)
def closes_branch_connections() -> Iterator[None]:
    yield
    tracking.close_branch_connections()


def schema(netbox: NetBox, index: int = 0) -> str:
    return f"branch_{netbox.branches[index]}"


def branching_ops_messages() -> list[str]:
    # The package's checks are compatibility checks; the URL checks would
    # build NetBox's GraphQL schema (seconds) to say nothing about them.
    messages = run_checks(tags=[Tags.compatibility])
    return sorted(m.id or "" for m in messages if (m.id or "").startswith("branching_ops"))


def test_branch_connection_gets_our_settings(netbox: NetBox) -> None:
    from netbox_branching import utilities

    name = schema(netbox)
    connection = connections[f"schema_{name}"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schemas(false), current_setting('application_name')")
        row = cursor.fetchone()
    assert row == ([name, "public"], f"branch:{name}")
    assert connection.settings_dict["ENGINE"] == "branching_ops.backend"
    assert connection.settings_dict["OPTIONS"]["verify_search_path"] is True
    # Tracked by this package; netbox-branching's own set stays empty.
    assert tracking.tracked_aliases() == [f"schema_{name}"]
    assert utilities._get_tracked_branch_aliases() == set()


def test_invalid_branch_name_is_refused_before_tracking() -> None:
    with pytest.raises(ConnectionDoesNotExist, match="'Feature-X' is not a valid branch name"):
        connections["schema_Feature-X"]
    assert tracking.tracked_aliases() == []


def test_one_set_of_request_receivers(netbox: NetBox) -> None:
    from netbox_branching import utilities

    for signal in (request_started, request_finished):
        receivers, _ = signal._live_receivers(None)  # type: ignore[attr-defined]
        assert utilities.close_old_branch_connections not in receivers
        assert receivers.count(tracking.close_old_branch_connections) == 1
    connection = connections[f"schema_{schema(netbox)}"]
    connection.ensure_connection()
    request_finished.send(sender=None)
    assert tracking.tracked_aliases() == []
    assert netbox.branch_backends() == []


def test_default_cap_keeps_one_branch_connection_per_thread(netbox: NetBox) -> None:
    assert settings.BRANCHING_OPS == {
        "MAX_CONNECTIONS_PER_THREAD": 1,
        "SEARCH_PATH_TAIL": ["public"],
    }
    for index in range(3):
        connections[f"schema_{schema(netbox, index)}"].ensure_connection()
    assert tracking.tracked_aliases() == [f"schema_{schema(netbox, 2)}"]
    assert [name for _, name, _, _ in netbox.branch_backends()] == [f"branch:{schema(netbox, 2)}"]


def test_checks_pass() -> None:
    from branching_ops.checks import serves_branches

    assert serves_branches(settings.DATABASES)
    assert branching_ops_messages() == []


def test_moved_hook_is_e060(monkeypatch: pytest.MonkeyPatch) -> None:
    from netbox_branching import utilities

    monkeypatch.setattr(utilities, "track_branch_connection", lambda alias: None)
    assert branching_ops_messages() == ["branching_ops.E060"]
    monkeypatch.delattr(utilities, "track_branch_connection")
    assert branching_ops_messages() == ["branching_ops.E060"]


def test_search_path_tail_in_plugins_config_is_e061() -> None:
    plugins_config = {
        **settings.PLUGINS_CONFIG,
        "branching_ops_netbox": {"MAX_CONNECTIONS_PER_THREAD": 1, "SEARCH_PATH_TAIL": ["x"]},
    }
    with override_settings(PLUGINS_CONFIG=plugins_config):
        assert branching_ops_messages() == ["branching_ops.E061"]


@pytest.mark.parametrize(
    ("max_age", "uncapped", "capped"),
    [
        (300, ["branching_ops.W060"], []),
        (None, ["branching_ops.W012"], ["branching_ops.W011"]),
    ],
)
def test_persistent_connections_warn_without_the_default_cap(
    monkeypatch: pytest.MonkeyPatch, max_age: int | None, uncapped: list[str], capped: list[str]
) -> None:
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", max_age)
    with override_settings(BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": None}):
        assert branching_ops_messages() == uncapped
    assert branching_ops_messages() == capped


def test_validate_refuses_missing_or_untested_netbox_branching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from netbox.registry import registry

    from branching_ops.contrib.netbox import plugin

    def missing(distribution: str) -> str:
        raise PackageNotFoundError(distribution)

    monkeypatch.setattr(plugin, "version", missing)
    with pytest.raises(
        ImproperlyConfigured, match="adapts netbox-branching, which is not installed"
    ):
        plugin.BranchingOpsNetBoxConfig.validate({}, "4.7.3")
    monkeypatch.setattr(plugin, "version", lambda distribution: "1.3.0")
    with pytest.raises(
        ImproperlyConfigured,
        match=r"is tested with netboxlabs-netbox-branching~=1\.2\.0 \(1\.2\.x\), not 1\.3\.0:",
    ):
        plugin.BranchingOpsNetBoxConfig.validate({}, "4.7.3")
    monkeypatch.setattr(plugin, "version", lambda distribution: "1.2.2")
    monkeypatch.setitem(registry["plugins"], "installed", [])
    with pytest.raises(
        ImproperlyConfigured, match="needs the netbox_branching plugin loaded before"
    ):
        plugin.BranchingOpsNetBoxConfig.validate({}, "4.7.3")


def test_netbox_refuses_to_start_with_the_plugins_in_the_wrong_order(netbox: NetBox) -> None:
    environment = netbox.env(Setting(adapter=True, conn_max_age=0))
    environment["NETBOX_TEST_PLUGINS"] = "branching_ops_netbox,netbox_branching"
    result = subprocess.run(
        [sys.executable, "-m", "netbox", "check"], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert (
        "django.core.exceptions.ImproperlyConfigured: branching_ops_netbox needs the "
        'netbox_branching plugin loaded before it: PLUGINS = ["netbox_branching", '
        '"branching_ops_netbox"].'
    ) in result.stderr


@pytest.mark.parametrize(
    ("command", "way"),
    [
        ("branch_create", "create a branch in NetBox (Branching > Branches, or POST"),
        ("branch_drop", "delete the branch in NetBox (or DELETE"),
        ("branch_migrate", "migrate branches in NetBox (a branch's Migrate button"),
    ],
)
def test_commands_around_netbox_branching_are_refused(
    netbox: NetBox, command: str, way: str
) -> None:
    with pytest.raises(CommandError) as error:
        call_command(command, schema(netbox))
    assert str(error.value).startswith(
        f"{command} would go around netbox-branching's Branch records; nothing was changed. "
        f"Instead, {way}"
    )
    with netbox.monitor() as monitor:
        row = monitor.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema(netbox),)
        ).fetchone()
    assert row == (1,)


def test_branch_connections_lists_netbox_branches(netbox: NetBox) -> None:
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        connections[f"schema_{schema(netbox, 1)}"].ensure_connection()
        opened.set()
        release.wait(30)
        tracking.close_branch_connections()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert opened.wait(30)
        out = StringIO()
        call_command("branch_connections", "--json", stdout=out)
    finally:
        release.set()
        holder.join()
    report = json.loads(out.getvalue())
    assert [(b["branch"], b["connections"]) for b in report["branches"]] == [
        (schema(netbox, 1), 1)
    ]


def test_workers_compose_netboxs_worker() -> None:
    from rq.worker import SimpleWorker
    from utilities.rqworker import NetBoxRQWorker

    from branching_ops.contrib.netbox.workers import NetBoxBranchSimpleWorker
    from branching_ops.contrib.netbox.workers import NetBoxBranchWorker
    from branching_ops.workers import BranchJobMixin
    from branching_ops.workers import BranchWorker

    assert NetBoxBranchWorker.__mro__[1:4] == (BranchWorker, BranchJobMixin, NetBoxRQWorker)
    assert issubclass(NetBoxBranchSimpleWorker, SimpleWorker)
    assert issubclass(NetBoxBranchSimpleWorker, NetBoxRQWorker)


def test_importing_the_package_imports_nothing_of_netbox() -> None:
    code = (
        "import sys, branching_ops.contrib.netbox, branching_ops.checks, branching_ops.databases; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('netbox', 'netbox_branching', 'utilities')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"
