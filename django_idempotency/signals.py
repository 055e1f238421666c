"""Django signals sent by the idempotency service.

Every signal is sent with ``sender=IdempotencyService`` and the keyword arguments
``scope`` and ``key``; ``request`` is given for the HTTP doors (else ``None``).
"""

from django.dispatch import Signal

#: The action ran for the first time and its outcome was stored (``state``).
executed = Signal()
#: A stored outcome was replayed instead of running the action.
replayed = Signal()
#: A concurrent duplicate was refused (409) or timed out waiting.
conflict = Signal()
#: The key was reused with a different request fingerprint (422).
mismatch = Signal()
#: The lease was lost while the action ran: another caller may run it again.
lease_lost = Signal()
