"""Fixtures shared by the suites, and the markers of the servers tests need."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from saga_logs import SagaLogs
from servers import SERVERS, reachable
from worker_processes import WorkerProcess


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose server is down; in CI (``CI`` set) fail it instead."""
    for name in SERVERS:
        if item.get_closest_marker(name) is None:
            continue
        problem = reachable(name)
        if problem is None:
            continue
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set, so a missing server fails the run)")
        pytest.skip(problem)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def saga_logs(request: pytest.FixtureRequest) -> Iterator[SagaLogs]:
    """Parametrizes a test over the durable stores; each ``new()`` log is fresh."""
    logs = SagaLogs(request.param)
    yield logs
    asyncio.run(logs.drop_all())


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """The worker processes a test started (see :mod:`worker_processes`), stopped at its end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()
