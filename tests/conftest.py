"""Shared fixtures: the persistence backend matrix and a kernel kit per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_workflow_engine.testing.kit import TestKit, create_test_kernel
from tests.backends import BACKENDS, backend_params
from tests.workflows import ALL_WORKFLOWS

pytest_plugins = ["tests.fake_llm_fixtures", "tests.moto_fixtures", "tests.postgres_fixtures"]


@pytest.fixture(params=backend_params())
def persistence(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh, empty Persistence of each backend (memory, SQLite, PostgreSQL)."""
    with BACKENDS[request.param](request) as store:
        yield store


@pytest.fixture
def kit(persistence: Any) -> TestKit:
    """A kernel over in-memory ports except persistence, with every test workflow."""
    return create_test_kernel(ALL_WORKFLOWS, persistence=persistence)


@pytest.fixture(autouse=True)
def _reset_stage_hooks() -> Iterator[None]:
    from tests import workflows

    workflows.CALLS.clear()
    workflows.HOOKS.clear()
    workflows.POLLS.clear()
    yield
    workflows.HOOKS.clear()


_AIRFLOW_DIRS = ("tests/integration/airflow/", "tests/e2e/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that drive real Airflow processes get one rerun.

    Airflow 3.3.2 can mark a resumed deferred task failed while it still runs
    (apache/airflow#72716), and ``dag.test``'s LocalExecutor shutdown occasionally hangs on a
    loaded 2-core machine. A regression of ours fails both tries.
    """
    del config
    for item in items:
        in_airflow_dir = any(part in item.nodeid for part in _AIRFLOW_DIRS)
        if in_airflow_dir and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=1))
