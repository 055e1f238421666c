"""The Django Tasks door (Django 6.0+): ``@idempotent`` above ``@task`` runs a task once.

::

    from django.tasks import task
    from django_idempotency.tasks import idempotent

    @idempotent(key=lambda order_id: f"order:{order_id}", ttl=86400)
    @task
    def charge(order_id): ...

The semantics are the Celery door's: the first run's return value (or exception) is
stored and every later run of the same key gets it back (or the same exception raised
again); an exception that is not ``Exception`` (``SystemExit`` from a worker shutting
down, ``KeyboardInterrupt``) releases the key. The key is the task result's id unless
``key`` is given, a callable that receives the task's arguments (never the context)
and returns a str. The scope is ``tasks:<module path>`` unless ``scope`` is given.

``@idempotent`` goes *above* ``@task`` so that everything is checked when the module
is imported: the options through the same model as every other door, and that it
wraps a ``Task``. It returns the same ``Task`` (same backend, queue, priority) whose
function receives the task context, which is how it learns the result id; the
function you wrote gets the context only if you asked for it (``takes_context=True``).
Calling ``.call()`` yourself passes no context and so has no result id: that runs the
function unprotected unless ``key`` is given.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any, TypeVar

import django
from django.core.exceptions import ImproperlyConfigured

from ..events import Door
from ..flows.run import RunFlow
from ..options import InvalidOption, Overrides, named

__all__ = ["idempotent"]

T = TypeVar("T")

_flow = RunFlow(Door.TASKS)
_WHERE = named("idempotent")


def _tasks_module() -> Any:
    try:
        import django.tasks as tasks
    except ImportError:
        raise ImproperlyConfigured(
            "django_idempotency.tasks.idempotent needs Django 6.0 or newer (django.tasks); "
            f"this is Django {django.get_version()}. With older Django, use "
            "django_idempotency.run() inside the task, or the Celery door."
        ) from None
    return tasks


def idempotent(
    task: Any = None, /, *, key: Callable[..., str] | None = None, **options: Any
) -> Any:
    """Run a Django ``Task`` once per key: ``@idempotent`` or ``@idempotent(...)`` above ``@task``.

    ``key``: ``(*args, **kwargs) -> str``, a business key instead of the result id.
    Other keywords are ``run()``'s options (``ttl``, ``lock_ttl``, ``wait_timeout``,
    ``conflict``, ``scope``, the serializers and callbacks), validated now; ``namespace``
    is the deprecated old name of ``scope``.
    """
    tasks = _tasks_module()
    if key is not None and not callable(key):
        raise InvalidOption(
            f"{_WHERE('key')} must be a callable (*args, **kwargs) -> str, not {type(key).__name__}"
        )
    overrides = Overrides.validate(options, "run", _WHERE, stacklevel=2)

    def wrap(task: Any) -> Any:
        if not isinstance(task, tasks.Task):
            raise ImproperlyConfigured(
                f"@idempotent goes above @task: it got {task!r}, not a django.tasks.Task"
            )
        scoped = Overrides({"scope": f"tasks:{task.module_path}", **overrides.values})
        return dataclasses.replace(
            task,
            func=_guarded(task.func, task.takes_context, key, scoped, tasks.TaskContext),
            takes_context=True,
        )

    return wrap(task) if task is not None else wrap


def _guarded(
    func: Callable[..., Any],
    takes_context: bool,
    make_key: Callable[..., str] | None,
    overrides: Overrides,
    context_type: type[Any],
) -> Callable[..., Any]:
    """``func`` behind the flow; it takes the context first when the backend passes one."""

    def split(args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        if args and isinstance(args[0], context_type):
            return args[0], args[1:]
        return None, args

    def job_key(context: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if make_key is not None:
            value = make_key(*args, **kwargs)
            if not isinstance(value, str) or not value:
                raise TypeError(f"idempotent(key=...) returned {value!r}; it must return a str")
            return value
        return None if context is None else str(context.task_result.id)

    def call_args(context: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (context, *args) if takes_context and context is not None else args

    if iscoroutinefunction(func):
        overrides.refuse_durable_async(f"@idempotent(durable=True) on {func.__qualname__}")

        @functools.wraps(func)
        async def arun_once(*given: Any, **kwargs: Any) -> Any:
            context, args = split(given)
            k = job_key(context, args, kwargs)
            if k is None:
                return await func(*call_args(context, args), **kwargs)
            options = overrides.run()
            return await _flow.arun(k, lambda: func(*call_args(context, args), **kwargs), options)

        return _taking_context(arun_once, func, takes_context)

    @functools.wraps(func)
    def run_once(*given: Any, **kwargs: Any) -> Any:
        context, args = split(given)
        k = job_key(context, args, kwargs)
        if k is None:
            return func(*call_args(context, args), **kwargs)
        options = overrides.run()
        return _flow.run(k, lambda: func(*call_args(context, args), **kwargs), options)

    return _taking_context(run_once, func, takes_context)


def _taking_context(
    wrapper: Callable[..., Any], func: Callable[..., Any], takes_context: bool
) -> Callable[..., Any]:
    """Give ``wrapper`` the signature Django checks for a task that takes its context."""
    signature = inspect.signature(func)
    if not takes_context:
        context = inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        signature = signature.replace(parameters=[context, *signature.parameters.values()])
    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper
