"""The engine's SQL persistence: tables, the store and migrations (SQLAlchemy 2 + Alembic).

Names load lazily (PEP 562): importing this package does not import SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = getattr(module, name)
    if name != "migrate":  # the submodule of that name is set here by the import system
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
