"""On SQLite, an outbox event's INSERT advances its run's ``event_sequence`` (a trigger).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

SQLite has no data-modifying CTE, so an event was two statements there (``UPDATE
wfe_workflow_runs ... RETURNING event_sequence``, then the INSERT) where PostgreSQL needs
one. With this trigger the store inserts an event as ``INSERT ... SELECT event_sequence + 1
FROM wfe_workflow_runs ...`` and SQLite moves the run's counter forward in the same statement.
Write transactions on SQLite hold the database's write lock from ``BEGIN IMMEDIATE``, so
sequences stay gap-free. The trigger only ever raises the counter, so an INSERT that carries a
sequence the run already has (an UPDATE that bumped it, with other run columns) is a no-op for
it. The store uses the one-statement form only where it finds the trigger (a table rebuilt
by a later batch migration loses its triggers). PostgreSQL is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = "wfe_outbox_events_advance_run_sequence"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        f"""
        CREATE TRIGGER IF NOT EXISTS {TRIGGER}
        AFTER INSERT ON wfe_outbox_events
        BEGIN
            UPDATE wfe_workflow_runs SET event_sequence = NEW.sequence
            WHERE id = NEW.workflow_run_id AND event_sequence < NEW.sequence;
        END
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
