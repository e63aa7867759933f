from __future__ import annotations

from django.urls import path

from tests.project import views

urlpatterns = [
    path("branch/<str:name>/", views.branch),
    path("default/", views.default),
    path("ok/", views.ok),
    path("marker/<str:name>/", views.marker),
]
