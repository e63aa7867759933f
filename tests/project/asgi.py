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
    context_local = Local(thread_critical=False)

    def context_local_state() -> tracking._ThreadState:
        try:
            state: tracking._ThreadState = context_local.state
        except AttributeError:
            state = context_local.state = tracking._ThreadState()
        return state

    tracking._state = context_local_state

application = get_asgi_application()
