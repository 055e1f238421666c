"""Durable mode's table: final records kept in the database, written with the work."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_idempotency", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="DurableRecord",
            fields=[
                ("rid", models.CharField(max_length=24, primary_key=True, serialize=False)),
                ("record", models.BinaryField()),
                ("expires_ms", models.BigIntegerField(db_index=True)),
            ],
            options={
                "default_permissions": ("view", "delete"),
                "verbose_name": "durable record",
                "verbose_name_plural": "durable records",
            },
        ),
    ]
