"""``manage.py demo_customer [USERNAME]``: create a customer with an API token; print the token."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create (or reuse) a customer with an API token and print the token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", nargs="?", default="alice")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        user, _ = get_user_model().objects.get_or_create(username=username)
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
