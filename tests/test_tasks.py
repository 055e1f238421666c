"""The Django Tasks door (``django_idempotency.tasks.idempotent``), on Django's
immediate backend: it runs the task in the enqueuing process, so what the task did is
visible here. A redelivery is what a worker does with a result it runs again: it calls
the task with a context for the same result.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured

from django_idempotency import InvalidOption

pytestmark = pytest.mark.matrix

HAS_TASKS = django.VERSION >= (6, 0)
needs_tasks = pytest.mark.skipif(not HAS_TASKS, reason="django.tasks needs Django 6.0+")


@pytest.fixture
def tasks():
    from .support import django_tasks

    django_tasks.ran.clear()
    return django_tasks


@pytest.mark.skipif(HAS_TASKS, reason="Django 6.0+ has django.tasks")
@pytest.mark.no_redis
def test_older_django_gets_a_clear_answer():
    from django_idempotency.tasks import idempotent

    with pytest.raises(ImproperlyConfigured, match=r"needs Django 6\.0"):
        idempotent(lambda: None)


@needs_tasks
def test_a_business_key_runs_once_and_both_results_get_the_value(tasks):
    first = tasks.charge.enqueue(101)
    second = tasks.charge.enqueue(101)
    assert first.id != second.id
    assert first.status == second.status == "SUCCESSFUL"
    assert second.return_value == first.return_value == {"order": 101, "run": 1}
    assert tasks.ran == [("charge", 101)]
    tasks.charge.enqueue(102)
    assert tasks.ran == [("charge", 101), ("charge", 102)]


@needs_tasks
def test_a_failure_is_replayed_as_the_same_error(tasks):
    first = tasks.decline.enqueue(7)
    second = tasks.decline.enqueue(7)
    assert first.status == second.status == "FAILED"
    assert first.errors[0].exception_class is second.errors[0].exception_class is ValueError
    assert "card declined for order 7 (run 1)" in second.errors[0].traceback
    assert tasks.ran == [("decline", 7)]


@needs_tasks
def test_the_default_key_is_the_result_id(tasks):
    from django.tasks import TaskContext

    label = uuid.uuid4().hex
    result = tasks.by_result_id.enqueue(label)
    assert result.return_value == {"label": label, "run": 1}
    # The backend runs the same result again (a worker that lost its acknowledgement).
    again = tasks.by_result_id.call(TaskContext(task_result=result), label)
    assert again == {"label": label, "run": 1}
    assert tasks.ran == [("by_result_id", label)]
    # Another enqueue is another result, another job.
    assert tasks.by_result_id.enqueue(label).return_value == {"label": label, "run": 2}


@needs_tasks
def test_a_task_that_takes_its_context_still_gets_it(tasks):
    from django.tasks import TaskContext

    result = tasks.with_context.enqueue("ctx")
    assert result.return_value == {"label": "ctx", "result_id": result.id}
    assert tasks.with_context.call(TaskContext(task_result=result), "ctx") == result.return_value
    assert tasks.ran == [("with_context", "ctx")]


@needs_tasks
def test_a_direct_call_without_context_or_key_runs_unprotected(tasks):
    tasks.by_result_id.call("direct")
    tasks.by_result_id.call("direct")
    assert tasks.ran == [("by_result_id", "direct"), ("by_result_id", "direct")]


@needs_tasks
def test_an_async_task_runs_once(tasks):
    label = uuid.uuid4().hex

    async def enqueue_twice() -> list[Any]:
        return [await tasks.acharge.aenqueue(label) for _ in range(2)]

    first, second = asyncio.run(enqueue_twice())
    # And from synchronous code, where Django runs the coroutine with async_to_sync.
    third = tasks.acharge.enqueue(label)
    assert first.return_value == second.return_value == third.return_value
    assert first.return_value == {"label": label, "run": 1}
    assert tasks.ran == [("acharge", label)]


@needs_tasks
@pytest.mark.no_redis
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ttl": -1}, "idempotent(ttl=...)"),
        ({"conflict": "bogus"}, "idempotent(conflict=...)"),
        ({"tll": 60}, "idempotent(tll=...)"),
        ({"key": "order"}, "idempotent(key=...)"),
        ({"methods": ["POST"]}, "idempotent(methods=...)"),
    ],
)
def test_bad_options_are_refused_at_decoration(options, named):
    from django_idempotency.tasks import idempotent

    with pytest.raises(InvalidOption) as raised:
        idempotent(**options)
    assert named in str(raised.value)


@needs_tasks
@pytest.mark.no_redis
def test_it_must_wrap_a_task():
    from django_idempotency.tasks import idempotent

    def plain() -> None: ...

    with pytest.raises(ImproperlyConfigured, match="above @task"):
        idempotent(plain)
