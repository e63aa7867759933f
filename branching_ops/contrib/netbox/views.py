"""The Connections tab of netbox-branching's Branch page, and the plugin's REST endpoint.

Both read a branch's backends with :func:`branching_ops.activity.branch_backends`
and end them with :func:`~branching_ops.activity.terminate_pids`,
``branch_terminate``'s code, limited to that branch. Terminating is the
custom NetBox permission action ``terminate_connections`` on Branch
(:data:`TERMINATE_PERMISSION`), granted in an ObjectPermission.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import DEFAULT_DB_ALIAS
from django.db import connections
from django.http import HttpRequest
from django.http import HttpResponse
from django.shortcuts import redirect
from django.shortcuts import render
from django.urls import reverse
from netbox.views import generic
from netbox_branching.models import Branch
from rest_framework.permissions import BasePermission
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from utilities.permissions import ModelAction
from utilities.permissions import register_model_actions
from utilities.views import ViewTab
from utilities.views import register_model_view

from branching_ops import activity
from branching_ops.management.output import backend_json
from branching_ops.management.output import format_duration

ACTION = "terminate_connections"
TERMINATE_PERMISSION = f"netbox_branching.{ACTION}_branch"
VIEW_PERMISSION = "netbox_branching.view_branch"

register_model_actions(
    Branch, [ModelAction(ACTION, help_text="End the branch's database connections")]
)


def branch_backends(branch: Any) -> list[activity.Backend]:
    """The server backends of ``branch`` (its ``schema_name``), on NetBox's database."""
    return activity.branch_backends(connections[DEFAULT_DB_ALIAS], branches=[branch.schema_name])


def connection_count(branch: Any) -> int:
    return len(branch_backends(branch))


def pids_of(values: Iterable[object]) -> list[int]:
    """The pids among what a form or a JSON body sent; anything else is dropped."""
    return sorted({int(value) for value in map(str, values) if value.isdigit()})


def terminate(branch: Any, pids: list[int]) -> activity.Termination:
    return activity.terminate_pids(
        connections[DEFAULT_DB_ALIAS], pids, branches=[branch.schema_name]
    )


def termination_messages(branch: Any, result: activity.Termination) -> list[tuple[int, str]]:
    """``(level, text)`` for each outcome, naming the pids."""
    said = []
    if result.denied:
        said.append(
            (
                messages.ERROR,
                f"The database role may not terminate pid {pid_list(result.denied)}; "
                "nothing was terminated.",
            )
        )
    if result.terminated:
        said.append(
            (
                messages.SUCCESS,
                f"Terminated {len(result.terminated)} connection(s) of branch {branch}: "
                f"pid {pid_list(result.terminated)}.",
            )
        )
    if result.not_ended:
        said.append(
            (
                messages.WARNING,
                f"pid {pid_list(result.not_ended)} had already exited or did not exit in time.",
            )
        )
    if result.refused:
        said.append(
            (
                messages.ERROR,
                f"Not terminated: pid {', '.join(map(str, result.refused))} is not a "
                f"connection of branch {branch} (it may have ended), or it is this request's own.",
            )
        )
    return said


def pid_list(backends: Iterable[activity.Backend]) -> str:
    return ", ".join(str(backend.pid) for backend in backends)


def rows(backends: Iterable[activity.Backend]) -> list[dict[str, Any]]:
    return [
        {"backend": backend, "for": format_duration(backend.idle or backend.active)}
        for backend in backends
    ]


@register_model_view(Branch, "connections")
class BranchConnectionsView(generic.ObjectView):  # type: ignore[misc]  # NetBox is untyped
    """The tab: the branch's backends; POST asks for confirmation, then terminates."""

    queryset = Branch.objects.all()
    template_name = "branching_ops_netbox/branch_connections.html"
    tab = ViewTab(label="Connections", badge=connection_count, permission=VIEW_PERMISSION)

    def get_extra_context(self, request: HttpRequest, instance: Any) -> dict[str, Any]:
        return {
            "rows": rows(branch_backends(instance)),
            "can_terminate": request.user.has_perm(TERMINATE_PERMISSION, instance),
        }

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        branch = self.get_object(**kwargs)
        if not request.user.has_perm(TERMINATE_PERMISSION, branch):
            raise PermissionDenied
        pids = pids_of(request.POST.getlist("pk"))
        back = redirect(reverse("plugins:netbox_branching:branch_connections", args=[branch.pk]))
        if not pids:
            messages.warning(request, "No connection selected; nothing was terminated.")
            return back
        if not request.POST.get("confirm"):
            listed = [b for b in branch_backends(branch) if b.pid in pids]
            return render(
                request,
                "branching_ops_netbox/branch_connections_confirm.html",
                {
                    "object": branch,
                    "rows": rows(listed),
                    "missing": sorted(set(pids) - {b.pid for b in listed}),
                },
            )
        for level, text in termination_messages(branch, terminate(branch, pids)):
            messages.add_message(request, level, text)
        return back


class BranchConnectionPermission(BasePermission):  # type: ignore[misc]  # NetBox's DRF
    """Listing needs ``view_branch``; POST ``terminate_connections_branch`` and a write token."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method == "POST":
            token = request.auth
            return bool(
                getattr(token, "write_enabled", True)
                and request.user.has_perm(TERMINATE_PERMISSION)
            )
        return bool(request.user.has_perm(VIEW_PERMISSION))


class BranchConnectionsAPIView(APIView):  # type: ignore[misc]  # NetBox's DRF
    """``GET ?branch=<id>``: the backends of the branches the user may see; POST terminates.

    POST ``{"branch": <id>, "pids": [...]}``: ends those of that branch's
    backends, with the same refusals as the tab.
    """

    permission_classes = [IsAuthenticated, BranchConnectionPermission]

    def get(self, request: Request) -> Response:
        visible = Branch.objects.restrict(request.user, "view")
        if branch_id := request.query_params.get("branch"):
            if not branch_id.isdigit():
                return Response({"branch": "Not a branch id."}, status=400)
            visible = visible.filter(pk=int(branch_id))
        by_schema = {branch.schema_name: branch for branch in visible}
        if not by_schema:  # no filter would mean every branch
            return Response([])
        backends = activity.branch_backends(
            connections[DEFAULT_DB_ALIAS], branches=sorted(by_schema)
        )
        return Response(
            [
                {
                    "branch_id": by_schema[backend.branch].pk,
                    "branch_name": by_schema[backend.branch].name,
                    **backend_json(backend),
                    "query_start": backend.query_start,
                }
                for backend in backends
            ]
        )

    def post(self, request: Request) -> Response:
        branch_id = request.data.get("branch")
        pids = request.data.get("pids")
        if not isinstance(branch_id, int) or not isinstance(pids, list):
            return Response({"detail": 'Send {"branch": <id>, "pids": [<pid>, ...]}.'}, status=400)
        branch = Branch.objects.restrict(request.user, ACTION).filter(pk=branch_id).first()
        if branch is None:
            return Response({"detail": "No such branch, or no permission on it."}, status=404)
        result = terminate(branch, pids_of(pids))
        return Response(
            {
                "terminated": [backend.pid for backend in result.terminated],
                "not_ended": [backend.pid for backend in result.not_ended],
                "refused": result.refused,
                "denied": [backend.pid for backend in result.denied],
                "messages": [text for _, text in termination_messages(branch, result)],
            }
        )
