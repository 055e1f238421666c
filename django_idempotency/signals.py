"""Django signals sent for each outcome (see :mod:`django_idempotency.events`).

Every signal is sent with ``sender=django_idempotency.events.Event`` and the keyword
arguments ``scope``, ``key`` (as the client or caller gave them), ``request`` (the HTTP
doors; else ``None``), ``outcome``, ``door`` and ``wait`` (seconds spent waiting, or
``None``); ``executed`` also has ``state``.
"""

from django.dispatch import Signal

#: The action ran for the first time and its outcome was stored (``state``).
executed = Signal()
#: The action ran but its outcome is not kept (5xx, exception, rollback): the key is free.
released = Signal()
#: A stored outcome was replayed instead of running the action (at once or after a wait).
replayed = Signal()
#: A concurrent duplicate was refused (409, conflict mode ``reject``, or ``MAX_WAITERS``).
conflict = Signal()
#: A concurrent duplicate waited ``WAIT_TIMEOUT`` without the first request finishing (409).
wait_timeout = Signal()
#: The key was reused with a different request fingerprint (422).
mismatch = Signal()
#: The key was malformed or missing where required (400).
refused = Signal()
#: The store was unreachable or full: refused (``fail_closed``) or run unprotected.
unavailable = Signal()
#: Critical: the action ran but its outcome could not be stored.
not_stored = Signal()
#: The lease was lost while the action ran: another caller may run it again.
lease_lost = Signal()
#: Critical: a stored record failed verification; it was neither replayed nor run again.
integrity_failed = Signal()
#: A retry was refused: its key's owner died before storing an outcome, and the policy
#: (``OUTCOME_UNKNOWN = "refuse"``) says not to run it again until an operator resolves it.
outcome_unknown = Signal()
