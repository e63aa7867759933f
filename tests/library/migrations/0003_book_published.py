from __future__ import annotations

from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [("library", "0002_book")]

    operations = [
        migrations.AddField(
            model_name="book", name="published", field=models.DateField(null=True)
        ),
    ]
