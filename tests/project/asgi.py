"""ASGI application of the test project, for real servers (uvicorn)."""

from __future__ import annotations

import os

from asgiref.local import Local
from django.core.asgi import get_asgi_application

from branching_ops import tracking

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

if os.environ.get("BRANCHING_OPS_TEST_CONTEXT_LOCAL_TRACKER"):
    # The regression the ASGI tests guard against: a tracker whose storage is
    # context-local while Django's connections are thread-local.
    tracking._state = Local(thread_critical=False)

application = get_asgi_application()
