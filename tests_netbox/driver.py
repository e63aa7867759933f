"""What needs NetBox's models: ``python -m tests_netbox.driver COMMAND`` prints one JSON line.

The scenarios' ``call_command()`` runs here, in a NetBox process of the
configuration measured; the jobs are enqueued by the test process itself
(see the ``netbox_process`` fixture).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import django
from django.db import connections

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def setup(branches: int) -> dict[str, Any]:
    """An admin, a v1 API token and ``branches`` provisioned branches, each with its own site.

    The site is named after its branch's schema: whoever reads a branch
    checks that its query ran there (``public`` has no site).
    """
    from dcim.models import Site
    from netbox_branching.models import Branch
    from netbox_branching.utilities import activate_branch
    from users.models import Token
    from users.models import User

    admin = User.objects.create_superuser("admin", "admin@example.com", password=None)
    Token(user=admin, version=1, token=TOKEN).save()
    for i in range(branches):
        branch = Branch(name=f"branch-{i:02}", owner=admin)
        branch.save(provision=False)
        branch.provision(admin)
        with activate_branch(branch):
            Site.objects.create(name=branch.schema_id, slug=branch.schema_id)
    return {
        "token": TOKEN,
        "branches": list(Branch.objects.order_by("name").values_list("schema_id", flat=True)),
    }


def enqueue(count: int) -> dict[str, list[str]]:
    """``count`` branch jobs round robin over the branches, and netbox-branching's sync of one."""
    import django_rq
    from netbox_branching.jobs import SyncBranchJob
    from netbox_branching.models import Branch
    from users.models import User

    connections.close_all()  # this process's connections may have been terminated
    branches = list(Branch.objects.order_by("name"))
    queue = django_rq.get_queue("default")
    rq_ids = [
        queue.enqueue("tests_netbox.jobs.touch_branch", branches[i % len(branches)].schema_id).id
        for i in range(count)
    ]
    sync = SyncBranchJob.enqueue(
        instance=branches[0], user=User.objects.get(username="admin"), commit=True
    )
    connections.close_all()  # the scenario starts on an empty server
    return {
        "rq": rq_ids,
        "netbox": [str(sync.job_id)],
        "netbox_rq": [str(sync.job_id)],
        "expected_failures": [],
    }


def enqueue_timeout() -> dict[str, list[str]]:
    """A query that outlives its ``job_timeout``; then jobs on the same branch and another."""
    import django_rq
    from netbox_branching.models import Branch

    connections.close_all()  # this process's connections may have been terminated
    first, second = Branch.objects.order_by("name")[:2]
    queue = django_rq.get_queue("default")
    timed_out = queue.enqueue(
        "tests_netbox.jobs.sleep_in_branch", first.schema_id, 30, job_timeout=1
    )
    after = [
        queue.enqueue("tests_netbox.jobs.touch_branch", first.schema_id),
        queue.enqueue("tests_netbox.jobs.touch_branch", first.schema_id),
        queue.enqueue("tests_netbox.jobs.touch_branch", second.schema_id),
    ]
    connections.close_all()  # the scenario starts on an empty server
    return {
        "rq": [job.id for job in after],
        "netbox": [],
        "netbox_rq": [],
        "expected_failures": [timed_out.id],
    }


def commands(runs: int) -> dict[str, list[dict[str, Any]]]:
    """``call_command()`` ``runs`` times in this process.

    After each run: the error it raised, if any, and the branch backends left.
    """
    import psycopg
    from django.core.management import call_command
    from netbox_branching.models import Branch

    from branching_ops.tracking import close_branch_connections
    from tests_netbox.commands import COMMANDS
    from tests_netbox.instance import BRANCH_BACKENDS_SQL
    from tests_netbox.instance import CAP
    from tests_netbox.instance import PLAIN
    from tests_netbox.instance import settled

    report: dict[str, list[dict[str, Any]]] = {}
    monitor = psycopg.connect(
        f"host=127.0.0.1 port={os.environ['NETBOX_TEST_PG_PORT']} user=postgres dbname=netbox",
        autocommit=True,
    )
    with monitor:
        for name, command in COMMANDS.items():
            report[name] = []
            for _ in range(runs):
                try:
                    call_command(command())
                except Exception as exception:
                    error = f"{type(exception).__name__}: {exception}"
                else:
                    error = None
                left = settled(
                    lambda: len(monitor.execute(BRANCH_BACKENDS_SQL).fetchall()),
                    CAP if name == PLAIN else 0,  # what the adapter may leave
                )
                report[name].append({"error": error, "left": left})
            # The next command starts with none of this one's connections
            # (closed through Django for stock, then untracked for the adapter).
            for branch in Branch.objects.all():
                connections[branch.connection_name].close()
            close_branch_connections()
    return report


COMMANDS = {
    "setup": setup,
    "commands": commands,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("args", nargs="*")
    options = parser.parse_args()
    django.setup()
    result = COMMANDS[options.command](*(int(a) if a.isdigit() else a for a in options.args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netbox.settings")
    main()
