"""The engine's tables, as SQLAlchemy Core tables on a ``MetaData`` of our own.

Every table is prefixed ``wfe_`` so the engine can share Airflow's metadata database without
touching Airflow's tables; the Alembic history (``migrations/``) and its version table
(``wfe_alembic_version``) are ours too. Columns mirror the kernel's records
(:mod:`airflow_workflow_engine.kernel.records`) in snake_case. Change a table here and add a
migration in the same change: ``tests/integration/persistence/test_migrations.py`` checks that
the two agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    case,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "JSONValue",
    "UTCDateTime",
    "ai_calls",
    "ai_cost_rollup",
    "annotations_table",
    "idempotency_keys",
    "metadata",
    "outbox_events",
    "run_and_stage_ai_sums",
    "workflow_logs",
    "workflow_runs",
    "workflow_stages",
]

TABLE_PREFIX = "wfe_"
#: Alembic's version table for our history; Airflow's own is ``alembic_version``.
VERSION_TABLE = "wfe_alembic_version"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp stored in UTC.

    Naive values are taken to be UTC. SQLite keeps no zone, so values are stored as naive UTC
    there and made aware again on the way out; PostgreSQL uses ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class JSONValue(TypeDecorator[Any]):
    """JSON (JSONB on PostgreSQL). Python ``None`` is SQL ``NULL``.

    Values are made JSON-compatible first (pydantic models, datetimes, enums, sets...), the
    same conversion pydantic's ``model_dump(mode="json")`` does.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else to_jsonable_python(value)


def _autoincrement() -> TypeEngine[int]:
    # SQLite only auto-increments an INTEGER PRIMARY KEY (a rowid alias), not a BIGINT one.
    return BigInteger().with_variant(Integer(), "sqlite")


workflow_runs = Table(
    "wfe_workflow_runs",
    metadata,
    Column("id", String, primary_key=True),
    Column("workflow_id", String, nullable=False),
    Column("workflow_name", String, nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", JSONValue),
    Column("output", JSONValue),
    Column("config", JSONValue, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("total_cost", Float, nullable=False),
    Column("total_tokens", BigInteger, nullable=False),
    Column("error_message", Text),
    Column("idempotency_key", String),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("event_sequence", BigInteger, nullable=False),
    Column("stage_attempts", JSONValue, nullable=False),
    Index(None, "status", "priority", "created_at"),
    Index(None, "workflow_id", "created_at"),
    Index(None, "idempotency_key"),
)

workflow_stages = Table(
    "wfe_workflow_stages",
    metadata,
    Column("id", String, primary_key=True),
    Column("workflow_run_id", String, nullable=False),
    Column("stage_id", String, nullable=False),
    Column("stage_name", String, nullable=False),
    Column("stage_number", Integer, nullable=False),
    Column("execution_group", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("output", JSONValue),
    Column("output_ref", String),
    Column("config", JSONValue),
    Column("suspended_state", JSONValue),
    Column("resume_state", JSONValue),
    Column("poll_interval", Float),
    Column("next_poll_at", UTCDateTime),
    Column("max_wait_until", UTCDateTime),
    Column("metrics", JSONValue, nullable=False),
    Column("progress", Float),
    Column("progress_message", Text),
    Column("error_message", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    UniqueConstraint("workflow_run_id", "stage_id"),
    Index(None, "status", "next_poll_at"),
)

workflow_logs = Table(
    "wfe_workflow_logs",
    metadata,
    # ``pk`` keeps insertion order, which is the order list_logs returns.
    Column("pk", _autoincrement(), primary_key=True, autoincrement=True),
    Column("id", String, nullable=False),
    Column("workflow_run_id", String, nullable=False),
    Column("stage_id", String),
    Column("level", String, nullable=False),
    Column("message", Text, nullable=False),
    Column("fields", JSONValue, nullable=False),
    Column("attempt", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("id"),
    Index(None, "workflow_run_id", "stage_id"),
)

annotations_table = Table(
    "wfe_annotations",
    metadata,
    Column("pk", _autoincrement(), primary_key=True, autoincrement=True),
    Column("id", String, nullable=False),
    Column("workflow_run_id", String, nullable=False),
    Column("stage_id", String),
    Column("key", String, nullable=False),
    Column("value", JSONValue),
    Column("actor_kind", String, nullable=False),
    Column("actor_id", String, nullable=False),
    Column("actor_version", String),
    Column("attempt", Integer),
    Column("idempotency_key", String),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("id"),
    # Also the index for "annotations of a run by key" (its leading columns). NULL
    # idempotency keys never collide, in PostgreSQL and in SQLite alike.
    UniqueConstraint("workflow_run_id", "key", "idempotency_key"),
)

outbox_events = Table(
    "wfe_outbox_events",
    metadata,
    Column("id", String, primary_key=True),
    Column("workflow_run_id", String, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("type", String, nullable=False),
    Column("payload", JSONValue, nullable=False),
    Column("causation_id", String),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime),
    Column("retry_count", Integer, nullable=False),
    Column("dlq_at", UTCDateTime),
    Column("last_error", Text),
    UniqueConstraint("workflow_run_id", "sequence"),
    Index(None, "published_at", "dlq_at", "occurred_at"),
    Index(None, "dlq_at"),
)

idempotency_keys = Table(
    "wfe_idempotency_keys",
    metadata,
    Column("pk", _autoincrement(), primary_key=True, autoincrement=True),
    Column("key", String, nullable=False),
    Column("command_type", String, nullable=False),
    Column("state", String(16), nullable=False),
    Column("result", JSONValue),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    UniqueConstraint("key", "command_type"),
)

#: The AI cost ledger: one row per model call (or batch request).
ai_calls = Table(
    "wfe_ai_calls",
    metadata,
    Column("id", String, primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("topic", String),
    Column("call_type", String, nullable=False),
    Column("provider", String, nullable=False),
    Column("model_key", String, nullable=False),
    Column("model_id", String),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cached_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost", Float),
    #: ``"reported"`` (by the provider), ``"estimated"`` (from our price table) or NULL.
    Column("cost_source", String),
    Column("latency_ms", Integer),
    Column("status", String, nullable=False),
    Column("error", Text),
    #: What failed after the provider answered (pricing, reading the answer, the stage
    #: attempt); the call itself was made and billed. NULL: nothing failed.
    Column("failure", Text),
    Column("workflow_run_id", String),
    Column("stage_id", String),
    Column("attempt", Integer),
    Column("batch_id", String),
    Column("request_id", String),
    Column("dag_id", String),
    Column("task_id", String),
    Column("dag_run_id", String),
    Column("prompt", Text),
    Column("response", Text),
    Column("prompt_hash", String),
    Index(None, "workflow_run_id"),
    Index(None, "topic"),
    Index(None, "model_key", "created_at"),
    Index(None, "created_at"),
)

#: ``wfe_ai_calls`` summed per (UTC day, model, provider, DAG), kept equal to the ledger's
#: aggregate in the transaction that inserts each ledger row (``ai/sql_ledger.py``), so the
#: cost pages read a few thousand rows instead of scanning every call. ``dag_id`` is ``''``
#: for calls made outside a DAG (a primary key column cannot be NULL); ``cost`` sums the
#: priced calls, ``unpriced_calls`` counts the others.
ai_cost_rollup = Table(
    "wfe_ai_cost_rollup",
    metadata,
    Column("day", Date, primary_key=True),
    Column("model_key", String, primary_key=True),
    Column("provider", String, primary_key=True),
    Column("dag_id", String, primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("cost", Float, nullable=False),
    Column("unpriced_calls", BigInteger, nullable=False),
)


def run_and_stage_ai_sums() -> Any:
    """``SELECT`` a run's ledger totals and one stage's: cost, tokens, stage cost, stage
    tokens (bound ``w_run`` and ``w_stage``; costs NULL without a priced call). The ledger's
    ``run_and_stage_totals`` runs it; the store joins it to the run's read for the kernel's
    outcome transaction. Built once per caller: SQLAlchemy reuses the compiled SQL."""
    c = ai_calls.c
    tokens = c.input_tokens + c.output_tokens
    in_stage = c.stage_id == bindparam("w_stage")
    return select(
        func.sum(c.cost).label("run_cost"),
        func.coalesce(func.sum(tokens), 0).label("run_tokens"),
        func.sum(case((in_stage, c.cost))).label("stage_cost"),
        func.coalesce(func.sum(case((in_stage, tokens))), 0).label("stage_tokens"),
    ).where(c.workflow_run_id == bindparam("w_run"))
