"""NetBox's ``configuration.py`` for the tests, copied to ``$NETBOX_ROOT/conf/``.

Everything that varies between runs comes from the environment the harness
sets (``NETBOX_TEST_*``): the throw-away servers' ports, ``CONN_MAX_AGE`` and
whether the adapter is on. The adapter lines are exactly the ones
docs/netbox.md tells an operator to add.
"""

from __future__ import annotations

import os

from netbox_branching.utilities import DynamicSchemaDict

ADAPTER = os.environ["NETBOX_TEST_ADAPTER"] == "1"

ALLOWED_HOSTS = ["*"]
SECRET_KEY = "netbox-test-secret-key-netbox-test-secret-key-0123456789"
API_TOKEN_PEPPERS = {1: "netbox-test-pepper-" * 3}
CENSUS_REPORTING_ENABLED = False

DATABASES = DynamicSchemaDict(
    {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "netbox",
            "USER": "netbox",
            "PASSWORD": "",
            "HOST": "127.0.0.1",
            "PORT": os.environ["NETBOX_TEST_PG_PORT"],
            "CONN_MAX_AGE": int(os.environ["NETBOX_TEST_CONN_MAX_AGE"]),
        }
    }
)
DATABASE_ROUTERS = ["netbox_branching.database.BranchAwareRouter"]

_redis = {"HOST": "127.0.0.1", "PORT": int(os.environ["NETBOX_TEST_REDIS_PORT"]), "SSL": False}
REDIS = {"tasks": {**_redis, "DATABASE": 0}, "caching": {**_redis, "DATABASE": 1}}

PLUGINS = ["netbox_branching", "branching_ops_netbox"] if ADAPTER else ["netbox_branching"]
if "NETBOX_TEST_PLUGINS" in os.environ:
    PLUGINS = os.environ["NETBOX_TEST_PLUGINS"].split(",")
if not ADAPTER:
    # Stock netbox-branching gives its branch connections no application_name:
    # label them (and change nothing else) so the server can count them.
    from tests_netbox import labeller  # noqa: F401

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "branching_ops": {"handlers": ["console"], "level": "WARNING"},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
        "rq.worker": {"handlers": ["console"], "level": "WARNING"},
    },
}
