"""The test settings, with ``OUTCOME_UNKNOWN`` from ``TEST_OUTCOME_UNKNOWN`` (servers the
outcome-unknown tests start and kill workers of)."""

import os

from .settings import *  # noqa: F403

IDEMPOTENCY["OUTCOME_UNKNOWN"] = os.environ.get("TEST_OUTCOME_UNKNOWN", "rerun")  # noqa: F405
