"""Django's test runner with each test on its own, empty idempotency store.

The store opens when a test starts and closes when it stops (after ``tearDown`` and its
cleanups). The runner's result class does this, not the suite, because that is the one
hook every mode goes through: serial, ``--parallel`` workers, ``--debug-sql``, ``--pdb``.
"""

from __future__ import annotations

import contextlib
import unittest
from typing import TYPE_CHECKING

from django.test.runner import DiscoverRunner, ParallelTestSuite, RemoteTestResult, RemoteTestRunner

from .isolation import isolated_store


class IsolatingResult(unittest.TestResult):
    """A test result that opens an isolated store when a test starts, closes it at its stop."""

    _isolation: contextlib.ExitStack | None = None

    def startTest(self, test: unittest.TestCase) -> None:
        """Open the test's store, then start it."""
        self._isolation = contextlib.ExitStack()
        self._isolation.enter_context(isolated_store())
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        """Stop the test, then remove its records."""
        try:
            super().stopTest(test)
        finally:
            stack, self._isolation = self._isolation, None
            if stack is not None:
                stack.close()


class IsolatingRemoteTestResult(IsolatingResult, RemoteTestResult):
    """The result a ``--parallel`` worker process records into, isolating each test."""


class IsolatingRemoteTestRunner(RemoteTestRunner):
    """What a ``--parallel`` worker process runs its share of the tests with."""

    resultclass = IsolatingRemoteTestResult


class IsolatingParallelTestSuite(ParallelTestSuite):
    """``--parallel``: each worker process isolates each of its tests."""

    runner_class = IsolatingRemoteTestRunner


# The mixin goes in front of a DiscoverRunner: type-checked as one, a plain class at runtime.
if TYPE_CHECKING:
    _Runner = DiscoverRunner
else:
    _Runner = object


class IsolatedStoreMixin(_Runner):
    """Mix into a ``DiscoverRunner`` subclass: each test its own, empty idempotency store."""

    parallel_test_suite: type[ParallelTestSuite] = IsolatingParallelTestSuite

    def get_resultclass(self) -> type[unittest.TextTestResult] | None:
        """The runner's own result class (``--debug-sql``, ``--pdb``), isolating."""
        base = super().get_resultclass() or unittest.TextTestResult
        return type(f"Isolating{base.__name__}", (IsolatingResult, base), {})


class IsolatedTestRunner(IsolatedStoreMixin, DiscoverRunner):
    """Django's ``DiscoverRunner``, each test on its own, empty idempotency store."""
