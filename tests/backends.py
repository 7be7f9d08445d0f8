"""Persistence backends the kernel's contract suite runs against.

Each entry builds a fresh, empty ``Persistence``; ``conftest.py`` parametrizes the
``persistence`` fixture over ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from airflow_workflow_engine.persistence.memory import InMemoryPersistence


@contextmanager
def memory_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    del request
    yield InMemoryPersistence()


BACKENDS = {
    "memory": memory_backend,
}
