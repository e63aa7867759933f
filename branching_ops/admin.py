"""Branch connections in Django's admin: listed and ended through :mod:`branching_ops.activity`.

The rows are the server's, read at each request: the changelist is a view of
its own over :func:`~branching_ops.activity.branch_backends` (no table, no
database view to migrate on every branch-serving database), drawn with the
admin's templates. Ending them is :func:`~branching_ops.activity.terminate_pids`,
``branch_terminate``'s code, on pids read again at that moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import cast

from django.contrib import admin
from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import DEFAULT_DB_ALIAS
from django.db import connections
from django.forms import ChoiceField
from django.http import HttpRequest
from django.http import HttpResponse
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern
from django.urls import path
from django.utils.http import urlencode

from branching_ops import activity
from branching_ops.management.output import format_duration
from branching_ops.models import BranchConnection

TERMINATE = "terminate_connections"

if TYPE_CHECKING:  # generic for django-stubs only
    ModelAdmin = admin.ModelAdmin[BranchConnection]
else:
    ModelAdmin = admin.ModelAdmin


@admin.register(BranchConnection)
class BranchConnectionAdmin(ModelAdmin):
    # The database whose branch backends are shown and ended.
    using = DEFAULT_DB_ALIAS
    actions = [TERMINATE]
    change_list_template = "admin/branching_ops/branchconnection/change_list.html"
    confirmation_template = "admin/branching_ops/branchconnection/terminate_confirmation.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_terminate_permission(self, request: HttpRequest) -> bool:
        # has_perm() is true for active superusers.
        return request.user.has_perm("branching_ops.terminate_branchconnection")

    def permitted_actions(self, request: HttpRequest) -> dict[str, str]:
        """This admin's own actions the user may run, by name: their description.

        Site-wide actions (``admin.site.add_action``) take a queryset, which these rows are not.
        """
        own = self.actions or ()
        return {
            name: getattr(type(self), name).short_description
            for name in self.get_actions(request)
            if name in own
        }

    def get_urls(self) -> list[URLPattern]:
        # Only the changelist: there is no row in any table to open, change or delete.
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name="{}_{}_changelist".format(*info),
            )
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self.run_action(request)
        branch = request.GET.get("branch", "")
        state = request.GET.get("state", "")
        query = request.GET.get("q", "").strip()
        everything = activity.branch_backends(connections[self.using])
        shown = [
            backend
            for backend in everything
            if (not branch or backend.branch == branch)
            and (not state or backend.state == state)
            and query.lower() in backend.branch
        ]
        action_form = helpers.ActionForm(auto_id=False)
        permitted = self.permitted_actions(request)
        cast(ChoiceField, action_form.fields["action"]).choices = [
            ("", "---------"),
            *permitted.items(),
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Branch connections",
            "database": connections[self.using].settings_dict["NAME"],
            "rows": [self.row(backend) for backend in shown],
            "total": len(everything),
            "query": query,
            "filters": [
                (
                    "branch",
                    self.choices(request, "branch", sorted({b.branch for b in everything})),
                ),
                ("state", self.choices(request, "state", activity.STATES)),
            ],
            "has_filters_set": bool(branch or state or query),
            "action_form": action_form if permitted else None,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "actions_selection_counter": False,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_list_template, context)

    @staticmethod
    def row(backend: activity.Backend) -> dict[str, Any]:
        return {
            "backend": backend,
            # How long it has been in its state: idle since, or running its query for.
            "for": format_duration(backend.idle or backend.active),
        }

    @staticmethod
    def choices(
        request: HttpRequest, name: str, values: Sequence[str]
    ) -> list[tuple[str, str, bool]]:
        """``(label, query string, selected)`` for each value of a filter, "All" first."""
        current = request.GET.get(name, "")
        kept = {key: str(value) for key, value in request.GET.items() if key != name}
        return [
            ("All", "?" + urlencode(kept), not current),
            *(
                (value, "?" + urlencode({**kept, name: value}), current == value)
                for value in values
            ),
        ]

    def run_action(self, request: HttpRequest) -> HttpResponse:
        """Django's action protocol, on pids: a known, permitted action, then the selection."""
        name = request.POST.get("action", "")
        back = HttpResponseRedirect(request.get_full_path())
        if name not in self.permitted_actions(request):
            if name == TERMINATE:  # offered to others, not to this user
                raise PermissionDenied
            self.message_user(request, "No action selected.", messages.WARNING)
            return back
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        pids = sorted({int(pid) for pid in selected if pid.isdigit()})
        if not pids:
            self.message_user(
                request,
                "Items must be selected in order to perform actions on them. "
                "No items have been changed.",
                messages.WARNING,
            )
            return back
        response: HttpResponse | None = getattr(self, name)(request, pids)
        return response or back

    @admin.action(permissions=["terminate"], description="Terminate selected branch connections")
    def terminate_connections(self, request: HttpRequest, pids: list[int]) -> HttpResponse | None:
        """A confirmation page first; on its POST, end those that are branch backends now."""
        connection = connections[self.using]
        if request.POST.get("post") != "yes":
            backends = [b for b in activity.branch_backends(connection) if b.pid in pids]
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Are you sure?",
                "rows": [self.row(backend) for backend in backends],
                "missing": sorted(set(pids) - {backend.pid for backend in backends}),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "action": TERMINATE,
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(request, self.confirmation_template, context)
        result = activity.terminate_pids(connection, pids)
        self.report(request, connection.settings_dict["NAME"], result)
        return None

    def report(self, request: HttpRequest, database: str, result: activity.Termination) -> None:
        """One message for each outcome, naming the pids."""
        if result.denied:
            self.message_user(
                request,
                f"Role {connections[self.using].settings_dict['USER']!r} may not terminate "
                f"pid {pids(result.denied)}; nothing was terminated.",
                messages.ERROR,
            )
        if result.terminated:
            self.message_user(
                request,
                f"Terminated {len(result.terminated)} branch connection(s): "
                + ", ".join(f"pid {b.pid} ({b.branch})" for b in result.terminated)
                + ".",
                messages.SUCCESS,
            )
        if result.not_ended:
            self.message_user(
                request,
                f"pid {pids(result.not_ended)} had already exited or did not exit "
                f"within {activity.TERMINATE_TIMEOUT_MS // 1000} s.",
                messages.WARNING,
            )
        if result.refused:
            self.message_user(
                request,
                f"Not terminated: pid {', '.join(map(str, result.refused))} is not a branch "
                f"connection of database {database!r} (it may have ended), "
                "or it is this request's own.",
                messages.ERROR,
            )


def pids(backends: Sequence[activity.Backend]) -> str:
    return ", ".join(str(backend.pid) for backend in backends)
