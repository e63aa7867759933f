"""Settings of the test project; the server address comes from the environment.

The pytest session starts its own PostgreSQL and exports its address, so
``manage.py`` subprocesses started by the tests reach the same server.
"""

from __future__ import annotations

import os

from branching_ops.databases import BranchDatabases

SECRET_KEY = "branching-ops-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.project.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django's admin (tests/test_admin*.py): sessions, users and messages are read
# lazily, so other views never touch the database for them.
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "branching_ops",
    "tests.testapp",
    # Three apps, 11 migrations (a FK across apps, a data migration): branch_migrate.
    "tests.library",
    "tests.shop",
]

DATABASES = BranchDatabases(
    {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("BRANCHING_OPS_TEST_PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("BRANCHING_OPS_TEST_PGPORT", "5432"),
            "USER": "app",
            "NAME": os.environ.get("BRANCHING_OPS_TEST_DBNAME", "branching_ops"),
            "TEST": {"NAME": "branching_ops_test"},
            "CONN_MAX_AGE": int(os.environ.get("BRANCHING_OPS_TEST_CONN_MAX_AGE", "0")),
            "CONN_HEALTH_CHECKS": os.environ.get("BRANCHING_OPS_TEST_CONN_HEALTH_CHECKS") == "1",
        }
    }
)
if os.environ.get("BRANCHING_OPS_TEST_SEARCH_PATH") == "transaction":  # tests/test_pooler.py
    BRANCHING_OPS = {"SEARCH_PATH": "transaction"}
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if other := os.environ.get("BRANCHING_OPS_TEST_SQLITE"):
    # A second alias of another engine beside the PostgreSQL ones (worker tests).
    DATABASES["other"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": other}
DATABASE_ROUTERS = ["branching_ops.routers.BranchRouter"]

RQ_QUEUES = {
    "default": {"URL": os.environ.get("BRANCHING_OPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")},
}
# What `rqworker` runs without --worker-class; the tests pass another class explicitly.
RQ = {"WORKER_CLASS": "branching_ops.workers.BranchWorker"}

if os.environ.get("BRANCHING_OPS_TEST_METRICS") == "1":  # tests/test_metrics.py
    INSTALLED_APPS.append("branching_ops.metrics")
