#!/usr/bin/env python
"""Django's command-line utility for the example project.

Without ``REDIS_URL`` every command runs on a private redis-server that lives as
long as the command: ``python manage.py runserver`` just works.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")
    from django.core.management import execute_from_command_line
    from exampleproject import embedded_redis

    # REDIS_URL, or a private redis-server for as long as this command runs. Exported,
    # so runserver's autoreloaded child uses the same server across reloads.
    embedded_redis.redis_url()

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
