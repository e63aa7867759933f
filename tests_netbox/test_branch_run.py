"""``branch_run`` under NetBox: netbox-branching's branches by name, activated its own way."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests_netbox.instance import NetBox

pytestmark = pytest.mark.usefixtures("netbox_process")

SITES = "from dcim.models import Site; print(*Site.objects.values_list('name', flat=True))"


def run(*args: str) -> str:
    out = StringIO()
    call_command("branch_run", *args, stdout=out, stderr=StringIO())
    return re.sub(r"\b\d+\.\d\d\b", "S.SS", out.getvalue())


def test_netbox_branches_by_name_each_read_on_its_own_schema(
    netbox: NetBox, tmp_path: Path
) -> None:
    first, second = netbox.branches[:2]

    output = run(
        "branch-00", "branch-01", "--parallel", "2", "--log-dir", str(tmp_path),
        "--", "shell", "-v", "0", "-c", SITES,
    )  # fmt: skip

    assert output.splitlines()[:3] == [
        "BRANCH     SCHEMA           RESULT  SECONDS",
        f"branch-00  branch_{first}  ok      S.SS",
        f"branch-01  branch_{second}  ok      S.SS",
    ]
    # Each branch's own site: NetBox's router sent the ORM to the branch (public has none).
    assert (tmp_path / f"branch_{first}.log").read_text().splitlines()[-1] == first
    assert (tmp_path / f"branch_{second}.log").read_text().splitlines()[-1] == second


def test_all_is_every_ready_branch(netbox: NetBox) -> None:
    output = run("--all", "--exclude", "branch-01", "--dry-run", "--", "check")

    expected = [
        f"branch-{i:02} (branch_{schema_id}): check"
        for i, schema_id in enumerate(netbox.branches)
        if i != 1
    ]
    assert output.splitlines() == [
        *expected,
        f"Would run on {len(expected)} branch(es); nothing was run.",
    ]


def test_unknown_netbox_branch_is_refused(netbox: NetBox) -> None:
    with pytest.raises(CommandError, match=r"^No NetBox branch named 'nope'; nothing was run\.$"):
        run("branch-00", "nope", "--", "check")
