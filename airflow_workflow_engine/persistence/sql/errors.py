"""Turning driver errors into the engine's typed errors, at the store boundary.

An unreachable server becomes ``DatabaseUnavailableError``, a missing ``wfe_`` table or column
``MigrationsNotAppliedError`` (both from :mod:`airflow_workflow_engine.errors`) and anything
else :class:`DatabaseOperationError`. Messages name the database (never the
password) and the cause; the driver's exception stays attached as ``__cause__``.
"""

from __future__ import annotations

import re

from sqlalchemy import exc
from sqlalchemy.engine import URL

from airflow_workflow_engine.errors import (
    DatabaseUnavailableError,
    MigrationsNotAppliedError,
    WorkflowEngineError,
)
from airflow_workflow_engine.persistence.sql.engine import describe_url

__all__ = ["MIGRATE_HINT", "DatabaseOperationError", "translate_error"]

MIGRATE_HINT = (
    "Run `airflow db migrate` (or, outside Airflow, "
    "`airflow_workflow_engine.persistence.sql.migrate(url)`) to create or upgrade them."
)

# SQLSTATE classes and codes (PostgreSQL): connection exceptions, shutdown, out of resources.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")
_SCHEMA_SQLSTATES = {"42P01": "table", "42703": "column", "3F000": "schema"}
_NOT_RETRYABLE_SQLSTATE_PREFIXES = ("22", "23", "42")
_SQLITE_UNAVAILABLE = (
    "unable to open database file",
    "database is locked",
    "disk i/o error",
    "readonly database",
)
_SQLITE_MISSING = re.compile(r"no such (table|column)|has no column named", re.IGNORECASE)


class DatabaseOperationError(WorkflowEngineError):
    """A database statement failed for a reason other than a missing table or lost server."""


def _cause(err: BaseException, url: URL) -> str:
    orig = err.orig if isinstance(err, exc.DBAPIError) else err
    text = " ".join(str(orig).split()) or type(orig).__name__
    if url.password:
        text = text.replace(str(url.password), "***")
    return text


def _sqlstate(err: exc.DBAPIError) -> str:
    return str(getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None) or "")


def translate_error(
    err: BaseException, url: URL, *, connecting: bool = False
) -> WorkflowEngineError:
    """The engine error for a SQLAlchemy/driver error raised while talking to ``url``."""
    where = describe_url(url)
    cause = _cause(err, url)
    if isinstance(err, exc.TimeoutError) or (
        connecting and isinstance(err, (exc.DBAPIError, OSError))
    ):
        return DatabaseUnavailableError(f"Cannot connect to the {where}: {cause}")
    if not isinstance(err, exc.DBAPIError):
        return DatabaseOperationError(f"Database error on the {where}: {cause}")
    state = _sqlstate(err)
    lowered = cause.lower()
    if state in _SCHEMA_SQLSTATES or _SQLITE_MISSING.search(cause):
        return MigrationsNotAppliedError(
            f"The workflow engine's tables in the {where} are missing or out of date "
            f"({cause}). {MIGRATE_HINT}"
        )
    if (
        err.connection_invalidated
        or state.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
        or any(s in lowered for s in _SQLITE_UNAVAILABLE)
    ):
        return DatabaseUnavailableError(
            f"Lost or cannot use the connection to the {where}: {cause}"
        )
    error = DatabaseOperationError(f"Database error on the {where}: {cause}")
    if isinstance(err, exc.IntegrityError) or state.startswith(_NOT_RETRYABLE_SQLSTATE_PREFIXES):
        error.retryable = False
    return error
