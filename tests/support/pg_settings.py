"""Settings for Django processes on the suite's PostgreSQL server (the ``postgres`` fixture).

The suite's settings, with the default database on PostgreSQL where the ``TEST_PG_*``
variables say (all required; ``PostgresServer.environ()`` gives them).
"""

import os

from .settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["TEST_PG_NAME"],
        "USER": os.environ["TEST_PG_USER"],
        "PASSWORD": "",
        "HOST": os.environ["TEST_PG_HOST"],
        "PORT": os.environ["TEST_PG_PORT"],
    }
}
