"""The second app of the test project: migrations with a foreign key across apps."""

from __future__ import annotations

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    tag = models.ForeignKey("testapp.Tag", null=True, on_delete=models.SET_NULL)
    published = models.DateField(null=True)
