"""A plain Django form behind the middleware, rendered with ``{% idempotency_key_field %}``.

This module is a URLconf (the forms tests and their gunicorn server use it, through
``tests.support.forms_settings``) and holds a middleware that notes each POST's arrival.

``GET /form/`` renders the donation form; ``POST /form/`` records one
:class:`~tests.support.models.Execution` (the donation) and redirects to
``/form/done/<pk>/`` (POST, redirect, GET), or renders the form again with its errors.
``?gate=NAME`` (a test on a real server) makes the view push its process id to the Redis
list ``NAME:entered`` after the row is written and block until an item arrives on
``NAME:open``: the test then knows the first submission is running and holds it there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template import engines
from django.urls import include, path

from .models import Execution

FORM_PAGE = engines["django"].from_string(
    """{% load idempotency %}<!doctype html>
<title>Donate</title>
<form method="post" action="{{ action }}">
  {% idempotency_key_field %}
  {{ form.as_p }}
  <button type="submit">Donate</button>
</form>
"""
)

DONE_PAGE = engines["django"].from_string(
    """<!doctype html>
<title>Thank you</title>
<h1>Thank you</h1>
<p id="donation">donation {{ row.pk }}</p>
"""
)


class DonationForm(forms.Form):
    name = forms.CharField(max_length=100, initial="Ada")
    amount = forms.IntegerField(min_value=1, initial=500)


def _redis() -> Any:
    import redis

    # No socket timeout: the view blocks on the gate for as long as the test holds it.
    return redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=None)


def _hold(gate: str) -> None:
    """Say the view is running, then wait until the test opens the gate."""
    client = _redis()
    try:
        client.rpush(f"{gate}:entered", os.getpid())
        # A guard against a test that never opens it, not a timing assumption.
        client.blpop([f"{gate}:open"], timeout=120)
    finally:
        client.close()


def donate(request: HttpRequest) -> HttpResponse:
    """The donation form: POST records one donation, then redirects to its page."""
    if request.method == "POST":
        form = DonationForm(request.POST)
        if form.is_valid():
            row = Execution.objects.create(key=request.POST.get("idempotency_key", ""))
            gate = request.GET.get("gate")
            if gate:
                _hold(gate)
            return redirect("form-done", pk=row.pk)
    else:
        form = DonationForm()
    action = request.get_full_path()
    return HttpResponse(FORM_PAGE.render({"form": form, "action": action}, request))


def done(request: HttpRequest, pk: int) -> HttpResponse:
    """The result page the form redirects to."""
    return HttpResponse(DONE_PAGE.render({"row": get_object_or_404(Execution, pk=pk)}))


class ArrivalMiddleware:
    """Push each ``POST /form/?gate=NAME``'s form key to ``NAME:arrived`` as it arrives.

    Placed before the idempotency middleware: it sees the duplicate that the idempotency
    middleware then holds back, so a test knows both submissions reached the server.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        gate = request.GET.get("gate")
        if request.method == "POST" and gate:
            client = _redis()
            try:
                client.rpush(f"{gate}:arrived", request.POST.get("idempotency_key", ""))
            finally:
                client.close()
        return self.get_response(request)


urlpatterns: list[Any] = [
    path("form/", donate, name="form"),
    path("form/done/<int:pk>/", done, name="form-done"),
    path("", include("tests.support.urls")),
]
