"""Least privilege on PostgreSQL: the rights the engine's processes need, and nothing more.

Workers, the triggerer, the api-server's pages and ``airflow workflow-engine`` read and write
the ``wfe_`` tables only; they never change the schema (``airflow db migrate`` does that, as
the database's owner). :data:`TABLE_PRIVILEGES` lists what the store
(:mod:`~airflow_workflow_engine.persistence.sql.store`) and the ledger
(:mod:`~airflow_workflow_engine.ai.sql_ledger`) actually run on each table, and
:func:`grant_statements` turns it into SQL for a role: ``REVOKE ALL`` then ``GRANT`` per table
and per sequence, so running it again (after an upgrade that adds a table) leaves exactly
these rights.

The engine's tables may live in a schema of their own: put the schema first in the engine URL's
``search_path`` (``?options=-csearch_path%3Dwfe``). :func:`search_path_schema` reads it back,
for ``airflow db migrate`` (which creates the tables there) and for the grants.
"""

from __future__ import annotations

import re

from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL

from airflow_workflow_engine.persistence.sql.tables import VERSION_TABLE, metadata

__all__ = [
    "SEQUENCE_PRIVILEGES",
    "TABLE_PRIVILEGES",
    "grant_statements",
    "privileges",
    "quote",
    "search_path_schema",
    "sequences",
]

#: Per table, the statements the engine runs on it. No DDL, no TRUNCATE, no REFERENCES.
TABLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    # get_run(for_update=True) is SELECT ... FOR UPDATE, which needs UPDATE.
    "wfe_workflow_runs": ("SELECT", "INSERT", "UPDATE"),
    # A rerun deletes the stages it runs again.
    "wfe_workflow_stages": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    # insert_logs upserts on the log id.
    "wfe_workflow_logs": ("SELECT", "INSERT", "UPDATE"),
    # Provenance is append-only (INSERT ... ON CONFLICT DO NOTHING).
    "wfe_annotations": ("SELECT", "INSERT"),
    "wfe_outbox_events": ("SELECT", "INSERT", "UPDATE"),
    # Claims are locked (FOR UPDATE), completed, and released (deleted) when a command fails.
    "wfe_idempotency_keys": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    # The ledger is append-only: UPDATE only records what failed after a paid call. No
    # DELETE: a worker cannot erase what was spent.
    "wfe_ai_calls": ("SELECT", "INSERT", "UPDATE"),
    # Kept by each ledger insert (INSERT ... ON CONFLICT DO UPDATE); rebuild_rollup() is the
    # owner's maintenance, not a worker's.
    "wfe_ai_cost_rollup": ("SELECT", "INSERT", "UPDATE"),
    # check_schema / test_connection read the revision.
    VERSION_TABLE: ("SELECT",),
}

#: ``nextval`` for the BIGSERIAL keys.
SEQUENCE_PRIVILEGES = ("USAGE",)

_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
_SEARCH_PATH = re.compile(r"(?:-c\s*|--)search_path\s*=\s*([^\s]+)")


def quote(name: str) -> str:
    """A PostgreSQL identifier, quoted when it must be."""
    return str(_PREPARER.quote(name))


def privileges() -> dict[str, tuple[str, ...]]:
    """:data:`TABLE_PRIVILEGES` for every table of the engine (in creation order); a table
    missing from it is a bug caught here rather than a worker's "permission denied"."""
    names = [t.name for t in metadata.sorted_tables] + [VERSION_TABLE]
    missing = [n for n in names if n not in TABLE_PRIVILEGES]
    if missing:
        raise RuntimeError(f"TABLE_PRIVILEGES has no entry for {', '.join(missing)}")
    return {n: TABLE_PRIVILEGES[n] for n in names}


def sequences() -> list[str]:
    """The sequences behind the tables' auto-incremented keys (PostgreSQL's serial naming)."""
    found = []
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is not None:
            found.append(f"{table.name}_{column.name}_seq")
    return found


def search_path_schema(url: URL) -> str | None:
    """The first schema of the ``search_path`` the URL sets through libpq's ``options``
    (``?options=-csearch_path%3Dwfe``), ``None`` when it sets none."""
    raw = url.query.get("options")
    options = " ".join(raw) if isinstance(raw, tuple) else (raw or "")
    match = _SEARCH_PATH.search(options)
    if match is None:
        return None
    first = match.group(1).split(",")[0].strip().strip('"')
    return first if first and first != "$user" else None


def grant_statements(
    role: str, *, schema: str | None = None, database: str | None = None
) -> list[str]:
    """The SQL that gives ``role`` exactly the engine's rights.

    ``schema``: the engine's own schema (created when missing; the role gets ``USAGE`` on it
    and nothing on any other); ``None``: the tables are found through the owner's
    ``search_path`` (normally ``public``, beside Airflow's tables, where the role gets rights
    on the ``wfe_`` tables only). ``database``: also ``GRANT CONNECT`` on it.
    """
    if not role.strip():
        raise ValueError("The role name is empty.")
    who = quote(role)
    prefix = f"{quote(schema)}." if schema else ""
    statements: list[str] = []
    if database:
        statements.append(f"GRANT CONNECT ON DATABASE {quote(database)} TO {who}")
    if schema:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        statements.append(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {who}")
    for table, rights in privileges().items():
        name = prefix + quote(table)
        statements.append(f"REVOKE ALL ON TABLE {name} FROM {who}")
        statements.append(f"GRANT {', '.join(rights)} ON TABLE {name} TO {who}")
    for sequence in sequences():
        name = prefix + quote(sequence)
        statements.append(f"REVOKE ALL ON SEQUENCE {name} FROM {who}")
        statements.append(f"GRANT {', '.join(SEQUENCE_PRIVILEGES)} ON SEQUENCE {name} TO {who}")
    return statements
