from django.db import models


class WebhookEvent(models.Model):
    """One run of the webhook handler (so the demo can count runs per event)."""

    event_id = models.CharField(max_length=255, db_index=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received = models.DateTimeField(auto_now_add=True)
