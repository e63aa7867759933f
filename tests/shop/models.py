"""The third app of the test project: it depends on the other two."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    book = models.ForeignKey("library.Book", on_delete=models.PROTECT)
    quantity = models.PositiveIntegerField(default=1)
