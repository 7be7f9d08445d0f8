"""The engine's SQL persistence: tables, the store and migrations (SQLAlchemy 2 + Alembic).

Names load lazily (PEP 562): importing this package does not import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "SqlPersistence": "store",
    "DatabaseOperationError": "errors",
    "migrate": "migrate",
    "downgrade": "migrate",
    "current_revision": "migrate",
    "HEAD_REVISION": "migrate",
    "VERSION_TABLE": "tables",
    "metadata": "tables",
}

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "DatabaseOperationError",
    "SqlPersistence",
    "current_revision",
    "downgrade",
    "metadata",
    "migrate",
]

if TYPE_CHECKING:
    from airflow_workflow_engine.persistence.sql.errors import DatabaseOperationError
    from airflow_workflow_engine.persistence.sql.migrate import (
        HEAD_REVISION,
        current_revision,
        downgrade,
        migrate,
    )
    from airflow_workflow_engine.persistence.sql.store import SqlPersistence
    from airflow_workflow_engine.persistence.sql.tables import VERSION_TABLE, metadata


# ``migrate`` is also a submodule: the helper returns the function and leaves the package
# attribute to the import system (``migrate.py`` makes that module callable).
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, relative=True)
