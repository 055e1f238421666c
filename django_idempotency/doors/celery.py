"""The Celery door: :class:`IdempotentTask`, a task base class that runs each job once.

Celery delivers a message at least once: a worker that dies under ``acks_late``, a
broker whose visibility timeout passes while the task still runs, a producer that
publishes again after a lost acknowledgement. This base class puts the task body
behind the same engine as every other door, so a second delivery of the same job gets
the first one's outcome instead of running it again:

=====================================  ================================================
The first delivery...                  A later (or concurrent) delivery of the job...
=====================================  ================================================
returns a value                        returns the same value (through the serializer)
raises an exception                    raises the same exception (rebuilt from JSON)
is still running                       waits for it (``conflict="wait"``) and returns
                                       its outcome; after ``wait_timeout`` it is retried
                                       with ``self.retry()``; with ``conflict="reject"``
                                       it fails at once with ``RequestInProgress``
calls ``self.retry()``, raises         is not stored: the key is released, so the
``Ignore``/``Reject``, or the worker   retry (or redelivery) runs the body again
shuts down (``SystemExit``)
dies (SIGKILL, OOM, power loss)        waits until the owner's lease ends (``lock_ttl``
                                       after its last renewal), then runs the body
=====================================  ================================================

The job's key is the task id unless the task sets ``idempotency_key``, a callable that
receives the task's arguments (``*args, **kwargs``, never ``self``) and returns a str:
a business key, so two messages with different ids but the same order run once. The
scope is ``celery:<task name>`` unless the task sets ``idempotency_scope``, so equal keys
of different tasks never meet. A task called directly (``task(...)``, not through a
worker or ``apply()``) has no id: it runs unprotected unless it has ``idempotency_key``.

Options are task attributes, ``idempotency_`` + the name of a ``run()`` option
(``idempotency_ttl``, ``idempotency_lock_ttl``, ``idempotency_wait_timeout``,
``idempotency_conflict``, ``idempotency_scope``, the serializers and callbacks),
given to ``@app.task(base=IdempotentTask, idempotency_ttl=3600)`` or set on a subclass.
They are validated when Celery creates the task class (at import for a subclass, when
the app finalizes for ``@app.task``; either way before any job runs): a bad value or an
unknown ``idempotency_*`` name raises ``InvalidOption`` naming the attribute.
``idempotency_namespace``, the old name of ``idempotency_scope``, still works and emits
a ``DeprecationWarning``; it will be removed in the next major release.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from ..events import Door
from ..exceptions import IdempotencyTimeout
from ..flows.run import RunFlow
from ..options import NONE, InvalidOption, Overrides, attributes

__all__ = ["IdempotentTask"]

#: What a task raises to say "not done, run me again": never stored, the key is released.
NOT_OUTCOMES: tuple[type[BaseException], ...] = (Retry, Ignore, Reject)

_PREFIX = "idempotency_"
_flow = RunFlow(Door.CELERY, not_outcomes=NOT_OUTCOMES)


class IdempotentTask(Task):  # type: ignore[misc,unused-ignore]  # Celery ships no type hints
    """A Celery ``Task`` whose body runs once per job: ``@app.task(base=IdempotentTask)``.

    Works with and without ``bind=True``. See the module's documentation for the
    semantics table, the key and the options.
    """

    #: ``(*args, **kwargs) -> str``: a business key instead of the task id.
    idempotency_key: ClassVar[Callable[..., str] | None] = None

    #: The validated ``idempotency_*`` options of this task class.
    _idempotency_overrides: ClassVar[Overrides] = NONE

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        where = attributes(cls.__name__, _PREFIX)
        given = {
            name[len(_PREFIX) :]: value
            for klass in reversed(cls.__mro__)
            for name, value in vars(klass).items()
            if name.startswith(_PREFIX) and name != "idempotency_key"
        }
        cls._idempotency_overrides = Overrides.validate(given, "run", where, stacklevel=2)
        key = vars(cls).get("idempotency_key")
        if key is not None:
            if isinstance(key, staticmethod):
                key = key.__func__
            if not callable(key):
                raise InvalidOption(
                    f"{where('key')} must be a callable (*args, **kwargs) -> str, "
                    f"not {type(key).__name__}"
                )
            # Stored as a staticmethod: the callable gets the task's arguments, not the task.
            cls.idempotency_key = staticmethod(key)

    def _job_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        make_key = type(self).idempotency_key
        if make_key is not None:
            key = make_key(*args, **kwargs)
            if not isinstance(key, str) or not key:
                raise TypeError(
                    f"{type(self).__name__}.idempotency_key returned {key!r}; "
                    "it must return a non-empty str"
                )
            return key
        task_id = self.request.id
        return task_id if isinstance(task_id, str) and task_id else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = self._job_key(args, kwargs)
        if key is None:  # called directly, no task id: nothing stable to key on
            return super().__call__(*args, **kwargs)
        options = self._task_overrides().run()
        body = super().__call__
        try:
            return _flow.run(key, lambda: body(*args, **kwargs), options)
        except IdempotencyTimeout as exc:
            # The owner is still alive (it renews its lease): give the worker slot back
            # and let the message come again, rather than fail a job that has not run.
            raise self.retry(
                exc=exc, countdown=max(1.0, options.wait_timeout), max_retries=None
            ) from exc

    def _task_overrides(self) -> Overrides:
        """The class's options, scoped by the task's name unless a scope was given."""
        overrides: Overrides | None = self.__dict__.get("_idempotency_task_overrides")
        if overrides is None:
            values = self._idempotency_overrides.values
            # Keys of different tasks never meet: the same business key means another job.
            overrides = Overrides({"scope": f"celery:{self.name}", **values})
            self.__dict__["_idempotency_task_overrides"] = overrides
        return overrides
