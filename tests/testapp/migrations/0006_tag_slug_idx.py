from __future__ import annotations

from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0005_fill_tag_slugs")]

    operations = [
        migrations.AddIndex(
            model_name="tag", index=models.Index(fields=["slug"], name="testapp_tag_slug_idx")
        ),
    ]
