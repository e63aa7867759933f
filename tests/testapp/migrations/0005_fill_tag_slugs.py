"""A data migration: it writes through the ORM, on the database being migrated."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def fill_slugs(apps: Any, schema_editor: Any) -> None:
    Tag = apps.get_model("testapp", "Tag")
    for tag in Tag.objects.using(schema_editor.connection.alias).filter(slug=""):
        tag.slug = tag.name.lower().replace(" ", "-")
        tag.save(update_fields=["slug"])


class Migration(migrations.Migration):
    dependencies = [("testapp", "0004_alter_tag_name")]

    operations = [migrations.RunPython(fill_slugs, migrations.RunPython.noop)]
