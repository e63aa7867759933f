"""The test project, misconfigured as ``BRANCHING_OPS_TEST_MISCONFIGURATION`` says.

For ``manage.py check`` subprocesses: the checks must report these through
Django's whole start-up, including when "branching_ops" is not installed.
"""

from __future__ import annotations

import os

from branching_ops.databases import BranchDatabases
from tests.project.settings import *  # noqa: F403
from tests.project.settings import INSTALLED_APPS

_misconfiguration = os.environ["BRANCHING_OPS_TEST_MISCONFIGURATION"]

if _misconfiguration == "app-not-installed":
    INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "branching_ops"]
    RQ = {"WORKER_CLASS": "branching_ops.workers.BranchWorker"}
elif _misconfiguration == "empty-databases":
    DATABASES = BranchDatabases({})
elif _misconfiguration == "no-default":
    DATABASES = BranchDatabases({"other": {"ENGINE": "django.db.backends.postgresql"}})
