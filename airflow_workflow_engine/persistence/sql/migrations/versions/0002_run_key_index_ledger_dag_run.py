"""Find a workflow run by its idempotency key with an index; the Airflow DAG run id on ledger
rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Sensors, listeners and the CLI find the workflow run of a DAG run by its idempotency key
(``"<dag_id>/<run_id>"``): without an index that is a scan of every run. Ledger rows already
carry the DAG id and task id; ``dag_run_id`` lets costs be rolled up per DAG run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_wfe_workflow_runs_idempotency_key", "wfe_workflow_runs", ["idempotency_key"]
    )
    with op.batch_alter_table("wfe_ai_calls") as batch:
        batch.add_column(sa.Column("dag_run_id", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wfe_ai_calls") as batch:
        batch.drop_column("dag_run_id")
    op.drop_index("ix_wfe_workflow_runs_idempotency_key", table_name="wfe_workflow_runs")
