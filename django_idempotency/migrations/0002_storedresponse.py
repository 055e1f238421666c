"""The table of durable mode: responses kept in the view's own transaction."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_idempotency", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="StoredResponse",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("scope", models.CharField(max_length=255)),
                ("key", models.CharField(max_length=255)),
                ("fingerprint", models.BinaryField()),
                ("state", models.CharField(max_length=16)),
                ("status", models.PositiveSmallIntegerField(null=True)),
                ("payload", models.BinaryField()),
                ("created", models.DateTimeField()),
                ("expires", models.DateTimeField(db_index=True)),
            ],
            options={
                "verbose_name": "stored response",
                "verbose_name_plural": "stored responses",
            },
        ),
        migrations.AddConstraint(
            model_name="storedresponse",
            constraint=models.UniqueConstraint(
                fields=("scope", "key"), name="idempotency_stored_scope_key"
            ),
        ),
    ]
