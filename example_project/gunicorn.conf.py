"""gunicorn settings for the example: one Redis for all workers.

Run from this directory (gunicorn reads ``./gunicorn.conf.py`` by itself)::

    gunicorn exampleproject.wsgi -w 4

Without ``REDIS_URL``, ``on_starting`` starts a private redis-server in the master,
before any worker is forked, so every worker inherits the same ``REDIS_URL``;
``on_exit`` stops it again.
"""

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

wsgi_app = "exampleproject.wsgi:application"
raw_env = ["DJANGO_SETTINGS_MODULE=exampleproject.settings"]
# Newer gunicorn opens a control socket at one fixed path in $HOME, shared by every
# instance; the demo and its tests run several at once and need none.
# (Older gunicorn ignores the unknown name.)
control_socket_disable = True


def on_starting(server: Any) -> None:
    from exampleproject import embedded_redis

    embedded_redis.redis_url()


def on_exit(server: Any) -> None:
    from exampleproject import embedded_redis

    embedded_redis.stop()
