from __future__ import annotations

from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0002_tag")]

    operations = [
        migrations.AddField(
            model_name="tag", name="slug", field=models.CharField(default="", max_length=100)
        ),
    ]
