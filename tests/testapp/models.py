from __future__ import annotations

from django.db import models


class Note(models.Model):
    text = models.TextField()


class Tag(models.Model):
    name = models.CharField(max_length=100)
    slug = models.CharField(max_length=100, default="")

    class Meta:
        indexes = [models.Index(fields=["slug"], name="testapp_tag_slug_idx")]
