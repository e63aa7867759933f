"""A django-tenants project with the test project's apps as tenant apps (benchmarks/migrate.py).

Runs in its own environment (``tox -e bench-tenants``): django-tenants
brings its own database engine and router. The server comes from the
environment, set by the benchmark.
"""

from __future__ import annotations

import os

SECRET_KEY = "branching-ops-bench-tenants"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# django-tenants imports contenttypes; its migrations run on public only (a shared app).
SHARED_APPS = ["django_tenants", "django.contrib.contenttypes", "benchmarks.tenants.customers"]
TENANT_APPS = ["tests.testapp", "tests.library", "tests.shop"]
INSTALLED_APPS = [*SHARED_APPS, *TENANT_APPS]
TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
TENANT_MULTIPROCESSING_MAX_PROCESSES = int(os.environ.get("BENCH_PROCESSES", "2"))
DATABASES = {
    "default": {
        "ENGINE": "django_tenants.postgresql_backend",
        "HOST": os.environ["BENCH_PGHOST"],
        "PORT": os.environ["BENCH_PGPORT"],
        "USER": os.environ["BENCH_PGUSER"],
        "NAME": os.environ["BENCH_PGDATABASE"],
    }
}
