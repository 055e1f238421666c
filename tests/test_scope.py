"""The ``scope`` option of run(), arun() and the job doors, and ``namespace``, its old name.

The part of a record's identity that is not the key is its scope, for every door. The
non-HTTP doors called it ``namespace`` until this release: the old name still works for
one deprecation cycle (it warns and means the same), giving both is refused, and the
records it stored are found under the new name, byte for byte.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import django
import pytest
from celery import Celery
from django.core.exceptions import ImproperlyConfigured

from django_idempotency import InvalidOption, arun, idempotent_view, run
from django_idempotency.celery import IdempotentTask

pytestmark = pytest.mark.matrix

MEMORY = "django_idempotency.stores.memory.open_store"
needs_tasks = pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks needs Django 6.0+")

#: What a DeprecationWarning for the old name says: the new name, and when it goes.
RENAMED = r"{old} is renamed to {new}; the old name will be removed in the next major release"


def renamed(old: str, new: str) -> str:
    """The warning's message, as a pattern (the names are escaped)."""
    escape = str.maketrans({c: "\\" + c for c in "().[]"})
    return RENAMED.format(old=old.translate(escape), new=new.translate(escape))


def unique(label: str) -> str:
    """A key no other test (or earlier run on the shared memory store) has used."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def never(*args: Any, **kwargs: Any) -> Any:
    """An action that must not run: the key's record is expected to be replayed."""
    raise AssertionError("the action ran, but the stored record should have been replayed")


@pytest.fixture
def memory(settings: Any) -> Any:
    """The in-memory store: these tests are about resolving options, not about Redis."""
    settings.IDEMPOTENCY = {"STORE": MEMORY}
    return settings


def deprecations(caught: pytest.WarningsRecorder) -> list[Any]:
    return [w for w in caught if issubclass(w.category, DeprecationWarning)]


# -- scope= and the old namespace= on run() and arun() -------------------------------------


@pytest.mark.no_redis
def test_run_takes_scope_and_equal_keys_in_other_scopes_are_other_records(memory):
    key = unique("order")
    assert run(key, lambda: "billing", scope="billing") == "billing"
    assert run(key, never, scope="billing") == "billing"
    assert run(key, lambda: "shipping", scope="shipping") == "shipping"
    assert run(key, lambda: "unscoped") == "unscoped"
    assert run(key, never, scope="") == "unscoped"  # the empty scope is the default


@pytest.mark.no_redis
def test_namespace_still_works_warns_at_the_caller_and_means_scope(memory):
    key = unique("order")
    with pytest.warns(DeprecationWarning, match=renamed("run(namespace=...)", "run(scope=...)")):
        assert run(key, lambda: "first", namespace="billing") == "first"
    assert run(key, never, scope="billing") == "first"
    assert run(key, lambda: "other scope", scope="shipping") == "other scope"
    # Every call warns (the validated options of the old name are not cached silent),
    # and the warning points at the line that passed namespace=.
    for _ in range(2):
        with pytest.warns(DeprecationWarning) as caught:
            assert run(key, never, namespace="billing") == "first"
        (warning,) = deprecations(caught)
        assert warning.filename == __file__


@pytest.mark.no_redis
def test_arun_takes_scope_and_namespace_warns_and_means_the_same(memory):
    key = unique("order")

    async def value(result: str) -> str:
        return result

    async def calls() -> list[str]:
        first = await arun(key, lambda: value("first"), scope="billing")
        with pytest.warns(DeprecationWarning) as caught:
            again = await arun(key, lambda: value("ran again"), namespace="billing")
        (warning,) = deprecations(caught)
        assert warning.filename == __file__
        assert "arun(namespace=...) is renamed to arun(scope=...)" in str(warning.message)
        other = await arun(key, lambda: value("other scope"), namespace="shipping")
        return [first, again, other]

    with pytest.warns(DeprecationWarning):
        assert asyncio.run(calls()) == ["first", "first", "other scope"]


@pytest.mark.no_redis
@pytest.mark.parametrize("call", ["run", "arun"])
def test_scope_and_namespace_together_are_refused_naming_both(memory, call):
    ran: list[int] = []

    async def action() -> None:
        ran.append(1)

    both = rf"{call}\(namespace=\.\.\.\) and {call}\(scope=\.\.\.\) are one option"
    with pytest.raises(InvalidOption, match=both) as refused:
        if call == "run":
            run("k", lambda: ran.append(1), scope="a", namespace="a")
        else:
            asyncio.run(arun("k", action, namespace="a", scope="b"))
    assert isinstance(refused.value, ImproperlyConfigured)
    assert isinstance(refused.value, TypeError)
    assert ran == []


@pytest.mark.no_redis
def test_a_bad_value_is_reported_under_the_name_it_was_given_as(memory):
    bad: dict[str, Any] = {"namespace": 42}
    old_name = pytest.raises(InvalidOption, match=r"run\(namespace=\.\.\.\) must be a string")
    with pytest.warns(DeprecationWarning), old_name:
        run("k", never, **bad)
    with pytest.raises(InvalidOption, match=r"run\(scope=\.\.\.\) must be a string"):
        run("k", never, scope=bad["namespace"])


@pytest.mark.no_redis
def test_the_http_doors_never_took_namespace_and_still_do_not():
    given: dict[str, Any] = {"namespace": "billing"}
    with pytest.raises(InvalidOption, match=r"idempotent_view\(namespace=\.\.\.\) is not an"):
        idempotent_view(**given)(lambda request: None)


# -- Celery: idempotency_scope, and idempotency_namespace deprecated -----------------------


def charge_task(app: Celery, **options: Any) -> Any:
    """A task charging an order, keyed by the order, with ``options`` as attributes."""

    @app.task(
        base=IdempotentTask,
        shared=False,
        idempotency_key=lambda order: f"order:{order}",
        **{f"idempotency_{name}": value for name, value in options.items()},
    )
    def charge(order: int) -> dict[str, int]:
        return {"charged": order}

    return charge


@pytest.mark.no_redis
def test_a_celery_task_takes_idempotency_scope(memory):
    app = Celery("scoped", set_as_current=False)
    charge = charge_task(app, scope="billing")
    assert charge.apply(args=(7,), task_id=unique("job")).get() == {"charged": 7}
    # The job's record is the one run() finds under the task's scope.
    assert run("order:7", never, scope="billing") == {"charged": 7}
    assert run("order:7", lambda: "unscoped") == "unscoped"


@pytest.mark.no_redis
def test_idempotency_namespace_still_works_and_warns_where_the_class_is_written(memory):
    with pytest.warns(DeprecationWarning) as caught:

        class Charge(IdempotentTask):
            idempotency_namespace = "shop"

    (warning,) = deprecations(caught)
    assert warning.filename == __file__
    assert "Charge.idempotency_namespace is renamed to Charge.idempotency_scope" in str(
        warning.message
    )

    app = Celery("namespaced", set_as_current=False)
    charge = charge_task(app, namespace="shop")
    old, new = "charge.idempotency_namespace", "charge.idempotency_scope"
    with pytest.warns(DeprecationWarning, match=renamed(old, new)):
        app.finalize()  # Celery makes the task classes now
    assert charge.apply(args=(8,), task_id=unique("job")).get() == {"charged": 8}
    assert run("order:8", never, scope="shop") == {"charged": 8}


@pytest.mark.no_redis
def test_a_celery_task_with_both_names_is_refused_when_its_class_is_made():
    with pytest.raises(InvalidOption, match=r"Both\.idempotency_namespace and Both\.idempotency_"):
        type("Both", (IdempotentTask,), {"idempotency_namespace": "a", "idempotency_scope": "a"})


# -- Django Tasks: scope, and namespace deprecated -----------------------------------------


@pytest.fixture
def plain_task() -> Any:
    from .support import scoped_tasks

    scoped_tasks.ran.clear()
    return scoped_tasks


@needs_tasks
@pytest.mark.no_redis
def test_the_tasks_door_takes_scope_and_namespace_warns(memory, plain_task):
    from django_idempotency.tasks import idempotent

    order: Callable[[int], str] = lambda number: f"order:{number}"  # noqa: E731
    scoped = idempotent(key=order, scope="billing")(plain_task.charge)
    assert scoped.enqueue(3).return_value == {"order": 3}
    assert run("order:3", never, scope="billing") == {"order": 3}

    with pytest.warns(DeprecationWarning) as caught:
        namespaced = idempotent(key=order, namespace="invoices")
    (warning,) = deprecations(caught)
    assert warning.filename == __file__
    assert "idempotent(namespace=...) is renamed to idempotent(scope=...)" in str(warning.message)
    assert namespaced(plain_task.charge).enqueue(4).return_value == {"order": 4}
    assert run("order:4", never, scope="invoices") == {"order": 4}
    assert plain_task.ran == [3, 4]

    with pytest.raises(InvalidOption, match=r"idempotent\(namespace=\.\.\.\) and idempotent\("):
        idempotent(key=order, namespace="a", scope="a")


# -- the stored format: records the old name wrote are found under the new -----------------

#: Records written by the release before the rename (commit 1fd16d4), with SECRET_KEY
#: "scope-rename-golden" and the default settings: (Redis key, stored bytes as hex).
#: ``run("order-1042", lambda: {"charged": 1042}, namespace="billing")``:
WRITTEN_BY_RUN = (
    "idem:{LM92BDoDbYvlmgWL}",
    "442d318801a24a91394800000005000000120e62696c6c696e676f726465722d313034327b2263686172676564"
    "223a313034327d66d366d7847f6bfc63d29382208f2902",
)
#: A Celery task named "billing.charge" returning ``{"charged": order}``, applied with
#: ``args=(1042,), task_id="job-1042"`` (its default scope, the task's name):
WRITTEN_BY_CELERY = (
    "idem:{ZzapUmitX6egA7kt}",
    "442d31a801a24a915d97000000040000001e2a63656c6572793a62696c6c696e672e6368617267656a6f622d31"
    "3034327b2263686172676564223a313034327dded77dc6d5867a1eda73f2aee6caca1c",
)
#: ``tests.support.django_tasks.charge.enqueue(1042)`` (its default scope, the module path):
WRITTEN_BY_TASKS = (
    "idem:{rXxhvmeNESblatc5}",
    "442d31c801a24a918fa20000000f000000324e7461736b733a74657374732e737570706f72742e646a616e676f"
    "5f7461736b732e6368617267656f726465723a313034327b226f72646572223a313034322c2272756e223a317d"
    "17c7f88bc13ca040cc2b67854118f908",
)


@pytest.fixture
def written_before(settings: Any, redis_client: Any) -> Callable[[tuple[str, str]], None]:
    """Put a record written by the release before the rename into this test's Redis."""
    settings.SECRET_KEY = "scope-rename-golden"

    def put(record: tuple[str, str]) -> None:
        name, stored = record
        redis_client.set(name, bytes.fromhex(stored), px=60_000)

    return put


def test_a_run_record_stored_under_namespace_is_replayed_under_scope(written_before):
    written_before(WRITTEN_BY_RUN)
    assert run("order-1042", never, scope="billing") == {"charged": 1042}
    with pytest.warns(DeprecationWarning):
        assert run("order-1042", never, namespace="billing") == {"charged": 1042}


def test_a_celery_record_of_the_default_scope_is_replayed(written_before):
    app = Celery("golden", set_as_current=False)

    @app.task(base=IdempotentTask, name="billing.charge", shared=False)
    def charge(order: int) -> dict[str, int]:
        raise AssertionError("the body ran, but the stored record should have been replayed")

    written_before(WRITTEN_BY_CELERY)
    assert charge.apply(args=(1042,), task_id="job-1042").get() == {"charged": 1042}


@needs_tasks
def test_a_django_tasks_record_of_the_default_scope_is_replayed(written_before):
    from .support import django_tasks

    django_tasks.ran.clear()
    written_before(WRITTEN_BY_TASKS)
    result = django_tasks.charge.enqueue(1042)
    assert (result.status, result.return_value) == ("SUCCESSFUL", {"order": 1042, "run": 1})
    assert django_tasks.ran == []
