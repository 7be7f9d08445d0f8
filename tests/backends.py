"""Persistence backends the kernel's contract suite runs against.

Each entry builds a fresh, empty ``Persistence``; ``conftest.py`` parametrizes the
``persistence`` fixture over ``BACKENDS`` (``backend_params()`` adds the ``postgres`` mark).

* ``memory``: :class:`InMemoryPersistence`.
* ``sqlite``: :class:`SqlPersistence` on a new SQLite file, migrated with ``migrate()``.
* ``postgres``: :class:`SqlPersistence` on a new database of the throwaway PostgreSQL server
  (``tests/postgres_fixtures.py``, requested lazily, so it only starts when used).

Migrating costs more than copying, so each SQL backend migrates one template per session and
copies it for every test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from airflow_workflow_engine.persistence.memory import InMemoryPersistence

Backend = Callable[[pytest.FixtureRequest], AbstractContextManager[Any]]

_sqlite_templates: dict[str, Path] = {}


@contextmanager
def memory_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    del request
    yield InMemoryPersistence()


def _sqlite_template(request: pytest.FixtureRequest) -> Path:
    from airflow_workflow_engine.persistence.sql import migrate

    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    basetemp = str(factory.getbasetemp())
    template = _sqlite_templates.get(basetemp)
    if template is None:
        template = factory.mktemp("wfe-sqlite-template") / "template.db"
        migrate(f"sqlite:///{template}")  # disposes its engine: the WAL is checkpointed
        _sqlite_templates[basetemp] = template
    return template


@contextmanager
def sqlite_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    tmp_path: Path = request.getfixturevalue("tmp_path")
    path = tmp_path / "wfe.db"
    shutil.copyfile(_sqlite_template(request), path)
    store = SqlPersistence(f"sqlite:///{path}")
    try:
        yield store
    finally:
        store.close()


def _postgres_server(request: pytest.FixtureRequest) -> Any:
    try:
        return request.getfixturevalue("postgres_server")
    except pytest.FixtureLookupError:
        # conftest.py did not list the plugin (pytest_plugins = ["tests.postgres_fixtures"]).
        request.config.pluginmanager.import_plugin("tests.postgres_fixtures")
        return request.getfixturevalue("postgres_server")


@contextmanager
def postgres_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    from airflow_workflow_engine.persistence.sql import SqlPersistence, migrate

    server = _postgres_server(request)
    name = server.create_database_from("migrated", migrate)
    store = SqlPersistence(server.url(name))
    try:
        yield store
    finally:
        store.close()
        server.drop_database(name)


BACKENDS: dict[str, Backend] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    "postgres": postgres_backend,
}

#: Marks per backend, for ``pytest -m`` selection (``-m "not postgres"``).
BACKEND_MARKS: dict[str, list[pytest.MarkDecorator]] = {"postgres": [pytest.mark.postgres]}


def backend_params() -> list[Any]:
    """``BACKENDS`` as ``pytest.param``s with their marks, for ``parametrize``."""
    return [pytest.param(name, marks=BACKEND_MARKS.get(name, []), id=name) for name in BACKENDS]
