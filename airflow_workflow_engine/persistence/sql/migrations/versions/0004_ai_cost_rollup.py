"""The AI-cost roll-up table, backfilled from the ledger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

``wfe_ai_cost_rollup`` holds the ledger (``wfe_ai_calls``) summed per UTC day, model,
provider and DAG; the ledger keeps it up to date in the transaction of each insert. The
upgrade fills it from the rows already in the ledger in one ``INSERT ... SELECT ... GROUP BY``
(run by ``airflow db migrate``; it reads the whole ledger once). The downgrade drops it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "wfe_ai_cost_rollup"

# The UTC calendar day of a ledger row, as the ledger's own roll-up query computes it.
_DAY = {
    "postgresql": "CAST(timezone('UTC', created_at) AS DATE)",
    "sqlite": "date(created_at)",  # SQLite stores naive UTC timestamps
}


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model_key", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("dag_id", sa.String(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "model_key", "provider", "dag_id", name="pk_wfe_ai_cost_rollup"
        ),
    )
    backfill(op.get_bind())


def backfill(conn: sa.Connection) -> None:
    """Fills the (empty) roll-up from every ledger row, in the migration's transaction."""
    day = _DAY.get(conn.dialect.name)
    if day is None:
        raise NotImplementedError(
            f"the AI-cost roll-up supports PostgreSQL and SQLite, not {conn.dialect.name}"
        )
    conn.execute(
        sa.text(
            f"INSERT INTO {TABLE} (day, model_key, provider, dag_id, calls, errors, "  # noqa: S608
            "input_tokens, output_tokens, cached_tokens, cost, unpriced_calls) "
            f"SELECT {day}, model_key, provider, COALESCE(dag_id, ''), count(*), "
            "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
            "sum(input_tokens), sum(output_tokens), sum(cached_tokens), "
            "COALESCE(sum(cost), 0), sum(CASE WHEN cost IS NULL THEN 1 ELSE 0 END) "
            f"FROM wfe_ai_calls GROUP BY {day}, model_key, provider, COALESCE(dag_id, '')"
        )
    )


def downgrade() -> None:
    op.drop_table(TABLE)
