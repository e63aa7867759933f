"""django-tenants' tenant and domain models: one row per schema to migrate."""

from __future__ import annotations

from django_tenants.models import DomainMixin
from django_tenants.models import TenantMixin


class Client(TenantMixin):
    auto_create_schema = False  # the benchmark creates the schemas, the same for every side


class Domain(DomainMixin):
    pass
