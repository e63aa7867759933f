"""The test project's three apps alone: the same 11 migrations as django-tenants' tenant apps.

Without django_rq's migrations and Django's admin, auth, contenttypes and
sessions (the admin tests'), whose migrations and post_migrate work
django-tenants' side does not run per schema.
"""

from __future__ import annotations

from tests.project.settings import *  # noqa: F403

INSTALLED_APPS = [
    app
    for app in INSTALLED_APPS  # noqa: F405
    if app != "django_rq" and not app.startswith("django.contrib.")
]
MIDDLEWARE = []
ROOT_URLCONF = "benchmarks.migrate_settings"
urlpatterns: list[object] = []
