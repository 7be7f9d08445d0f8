"""The engine's tables: runs, stages, logs, annotations, outbox, idempotency keys, AI calls.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand; kept in step with ``tables.py`` (a test compares the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _autoincrement() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "wfe_workflow_runs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("workflow_name", sa.String(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", _json(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("config", _json(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("total_cost", sa.Float(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("event_sequence", sa.BigInteger(), nullable=False),
        sa.Column("stage_attempts", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_wfe_workflow_runs"),
    )
    op.create_index(
        "ix_wfe_workflow_runs_status_priority_created_at",
        "wfe_workflow_runs",
        ["status", "priority", "created_at"],
    )
    op.create_index(
        "ix_wfe_workflow_runs_workflow_id_created_at",
        "wfe_workflow_runs",
        ["workflow_id", "created_at"],
    )

    op.create_table(
        "wfe_workflow_stages",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("workflow_run_id", sa.String(), nullable=False),
        sa.Column("stage_id", sa.String(), nullable=False),
        sa.Column("stage_name", sa.String(), nullable=False),
        sa.Column("stage_number", sa.Integer(), nullable=False),
        sa.Column("execution_group", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("output", _json(), nullable=True),
        sa.Column("output_ref", sa.String(), nullable=True),
        sa.Column("config", _json(), nullable=True),
        sa.Column("suspended_state", _json(), nullable=True),
        sa.Column("resume_state", _json(), nullable=True),
        sa.Column("poll_interval", sa.Float(), nullable=True),
        sa.Column("next_poll_at", _ts(), nullable=True),
        sa.Column("max_wait_until", _ts(), nullable=True),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_wfe_workflow_stages"),
        sa.UniqueConstraint(
            "workflow_run_id", "stage_id", name="uq_wfe_workflow_stages_workflow_run_id_stage_id"
        ),
    )
    op.create_index(
        "ix_wfe_workflow_stages_status_next_poll_at",
        "wfe_workflow_stages",
        ["status", "next_poll_at"],
    )

    op.create_table(
        "wfe_workflow_logs",
        sa.Column("pk", _autoincrement(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("workflow_run_id", sa.String(), nullable=False),
        sa.Column("stage_id", sa.String(), nullable=True),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("fields", _json(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_wfe_workflow_logs"),
        sa.UniqueConstraint("id", name="uq_wfe_workflow_logs_id"),
    )
    op.create_index(
        "ix_wfe_workflow_logs_workflow_run_id_stage_id",
        "wfe_workflow_logs",
        ["workflow_run_id", "stage_id"],
    )

    op.create_table(
        "wfe_annotations",
        sa.Column("pk", _autoincrement(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("workflow_run_id", sa.String(), nullable=False),
        sa.Column("stage_id", sa.String(), nullable=True),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", _json(), nullable=True),
        sa.Column("actor_kind", sa.String(), nullable=False),
        sa.Column("actor_id", sa.String(), nullable=False),
        sa.Column("actor_version", sa.String(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_wfe_annotations"),
        sa.UniqueConstraint("id", name="uq_wfe_annotations_id"),
        sa.UniqueConstraint(
            "workflow_run_id",
            "key",
            "idempotency_key",
            name="uq_wfe_annotations_workflow_run_id_key_idempotency_key",
        ),
    )

    op.create_table(
        "wfe_outbox_events",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("workflow_run_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("causation_id", sa.String(), nullable=True),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.Column("published_at", _ts(), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("dlq_at", _ts(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_wfe_outbox_events"),
        sa.UniqueConstraint(
            "workflow_run_id", "sequence", name="uq_wfe_outbox_events_workflow_run_id_sequence"
        ),
    )
    op.create_index(
        "ix_wfe_outbox_events_published_at_dlq_at_occurred_at",
        "wfe_outbox_events",
        ["published_at", "dlq_at", "occurred_at"],
    )
    op.create_index("ix_wfe_outbox_events_dlq_at", "wfe_outbox_events", ["dlq_at"])

    op.create_table(
        "wfe_idempotency_keys",
        sa.Column("pk", _autoincrement(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("command_type", sa.String(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_wfe_idempotency_keys"),
        sa.UniqueConstraint(
            "key", "command_type", name="uq_wfe_idempotency_keys_key_command_type"
        ),
    )

    op.create_table(
        "wfe_ai_calls",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("topic", sa.String(), nullable=True),
        sa.Column("call_type", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("model_key", sa.String(), nullable=False),
        sa.Column("model_id", sa.String(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("cost_source", sa.String(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("workflow_run_id", sa.String(), nullable=True),
        sa.Column("stage_id", sa.String(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("batch_id", sa.String(), nullable=True),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("dag_id", sa.String(), nullable=True),
        sa.Column("task_id", sa.String(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("prompt_hash", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_wfe_ai_calls"),
    )
    op.create_index("ix_wfe_ai_calls_workflow_run_id", "wfe_ai_calls", ["workflow_run_id"])
    op.create_index("ix_wfe_ai_calls_topic", "wfe_ai_calls", ["topic"])
    op.create_index(
        "ix_wfe_ai_calls_model_key_created_at", "wfe_ai_calls", ["model_key", "created_at"]
    )
    op.create_index("ix_wfe_ai_calls_created_at", "wfe_ai_calls", ["created_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints with it.
    for table in (
        "wfe_ai_calls",
        "wfe_idempotency_keys",
        "wfe_outbox_events",
        "wfe_annotations",
        "wfe_workflow_logs",
        "wfe_workflow_stages",
        "wfe_workflow_runs",
    ):
        op.drop_table(table)
