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
