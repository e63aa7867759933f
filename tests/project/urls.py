from __future__ import annotations

from django.apps import apps
from django.contrib import admin
from django.urls import path

from tests.project import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("branch/<str:name>/", views.branch),
    path("default/", views.default),
    path("ok/", views.ok),
    path("marker/<str:name>/", views.marker),
    # The real-server and fault tests.
    path("async/branch/<str:name>/", views.branch_async),
    path("state/", views.state),
    path("hold/<int:parties>/<str:name>/", views.hold),
    path("hold_note/<int:parties>/<str:name>/", views.hold_note),
    path("async/note/<str:text>/", views.note_async),
    path("count_t/<str:name>/", views.count_t),
    path("stream/<str:name>/", views.stream_in_transaction),
]

if apps.is_installed("branching_ops.metrics"):
    from tests.project.metrics import metrics

    urlpatterns.append(path("metrics", metrics))
