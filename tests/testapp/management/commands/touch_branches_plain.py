"""The same command on plain ``BaseCommand``: it leaks one connection per branch."""

from __future__ import annotations

from tests.testapp.management.commands.touch_branches import TouchBranches


class Command(TouchBranches):
    pass
