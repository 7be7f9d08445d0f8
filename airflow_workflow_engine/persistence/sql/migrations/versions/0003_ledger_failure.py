"""What failed after a provider answered, on ledger rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

A model call that was answered (and billed) keeps its ``wfe_ai_calls`` row whatever fails
afterwards: pricing it, reading or validating the answer, or the stage attempt that made it.
``failure`` says what failed, so the spend of a failed attempt is visible as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("wfe_ai_calls") as batch:
        batch.add_column(sa.Column("failure", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wfe_ai_calls") as batch:
        batch.drop_column("failure")
