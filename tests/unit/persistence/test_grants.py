"""The least-privilege grants' SQL (``persistence/sql/grants.py``), without a database; the
grants themselves run on PostgreSQL in tests/integration/airflow/test_least_privilege.py."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from airflow_workflow_engine.persistence.sql.grants import (
    TABLE_PRIVILEGES,
    grant_statements,
    privileges,
    search_path_schema,
    sequences,
)
from airflow_workflow_engine.persistence.sql.tables import VERSION_TABLE, metadata


def test_every_table_has_its_rights_and_none_has_ddl() -> None:
    assert set(privileges()) == {t.name for t in metadata.sorted_tables} | {VERSION_TABLE}
    allowed = {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert all(set(rights) <= allowed for rights in TABLE_PRIVILEGES.values())
    assert "DELETE" not in TABLE_PRIVILEGES["wfe_ai_calls"]  # spend cannot be erased
    assert TABLE_PRIVILEGES[VERSION_TABLE] == ("SELECT",)


def test_statements_revoke_then_grant_each_table_and_sequence() -> None:
    sql = grant_statements("wfe_engine", schema="wfe", database="airflow")
    assert sql[:3] == [
        "GRANT CONNECT ON DATABASE airflow TO wfe_engine",
        "CREATE SCHEMA IF NOT EXISTS wfe",
        "GRANT USAGE ON SCHEMA wfe TO wfe_engine",
    ]
    for table, rights in privileges().items():
        revoke = sql.index(f"REVOKE ALL ON TABLE wfe.{table} FROM wfe_engine")
        assert sql[revoke + 1] == f"GRANT {', '.join(rights)} ON TABLE wfe.{table} TO wfe_engine"
    assert sequences() == [
        "wfe_annotations_pk_seq",
        "wfe_idempotency_keys_pk_seq",
        "wfe_workflow_logs_pk_seq",
    ]
    assert "GRANT USAGE ON SEQUENCE wfe.wfe_workflow_logs_pk_seq TO wfe_engine" in sql
    assert not any(s.startswith(("ALTER", "DROP")) or "ALL PRIVILEGES" in s for s in sql)


def test_names_are_quoted_and_an_empty_role_is_refused() -> None:
    sql = grant_statements('Engine "x"', schema="My Schema")
    assert 'GRANT USAGE ON SCHEMA "My Schema" TO "Engine ""x"""' in sql
    with pytest.raises(ValueError, match="role name is empty"):
        grant_statements(" ")


@pytest.mark.parametrize(
    ("url", "schema"),
    [
        ("postgresql://u@h/db?options=-csearch_path%3Dwfe", "wfe"),
        ("postgresql://u@h/db?options=-c%20search_path%3Dwfe,public", "wfe"),
        ("postgresql://u@h/db?options=--search_path%3D%22wfe%22", "wfe"),
        ("postgresql://u@h/db?options=-csearch_path%3D%24user,public", None),
        ("postgresql://u@h/db?options=-cstatement_timeout%3D5000", None),
        ("postgresql://u@h/db", None),
    ],
)
def test_the_schema_is_the_first_of_the_urls_search_path(url: str, schema: str | None) -> None:
    assert search_path_schema(make_url(url)) == schema
