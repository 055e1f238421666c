"""The test settings, with the forms URLconf and a middleware noting each form POST."""

from .settings import *  # noqa: F403
from .settings import MIDDLEWARE

ROOT_URLCONF = "tests.support.forms"
MIDDLEWARE = ["tests.support.forms.ArrivalMiddleware", *MIDDLEWARE]
