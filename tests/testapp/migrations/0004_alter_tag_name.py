from __future__ import annotations

from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0003_tag_slug")]

    operations = [
        migrations.AlterField(
            model_name="tag", name="name", field=models.CharField(max_length=100)
        ),
    ]
