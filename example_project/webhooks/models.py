from django.db import models


class WebhookEvent(models.Model):
    """One run of the webhook handler (so the demo can count runs per event)."""

    event_id = models.CharField(max_length=255, db_index=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received = models.DateTimeField(auto_now_add=True)


class JobRun(models.Model):
    """One run of the settlement task's body."""

    event_id = models.CharField(max_length=255, db_index=True)
    task_id = models.CharField(max_length=255)
    pid = models.IntegerField()
    ran = models.DateTimeField(auto_now_add=True)


class JobDelivery(models.Model):
    """One message the worker finished for the settlement task (runs + replays)."""

    task_id = models.CharField(max_length=255, db_index=True)
    delivered = models.DateTimeField(auto_now_add=True)
