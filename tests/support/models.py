from django.db import models


class Execution(models.Model):
    """One row per time a test view's side effect really ran."""

    key = models.CharField(max_length=255)
    created = models.DateTimeField(auto_now_add=True)
