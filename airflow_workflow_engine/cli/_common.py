"""What the ``airflow workflow-engine`` commands share: error handling, the engine's database,
finding a DAG run's workflow run, dates and output.

Imported only when a command runs (never by ``definition.py``).
"""

from __future__ import annotations

import functools
import json
import re
import sys
import traceback
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.plugins.ui.queries import newest_runs, split_key

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.records import RunRecord
    from airflow_workflow_engine.persistence.sql.store import SqlPersistence

__all__ = [
    "PREVIEW_CHARS",
    "CommandError",
    "cli_command",
    "engine_url",
    "iso",
    "money_text",
    "newest_runs",
    "open_store",
    "parse_when",
    "preview",
    "print_json",
    "render_table",
    "resolve_run",
    "split_key",
]

#: Characters of a stage output shown by ``runs show``.
PREVIEW_CHARS = 200

Command = Callable[[Namespace], None]

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CommandError(Exception):
    """A wrong argument, or a DAG, run or stage that does not exist: one line, exit status 1."""


def cli_command(*, audit: bool = False) -> Callable[[Command], Command]:
    """Makes a function an Airflow CLI command.

    - the providers' configuration is loaded first (the ``[workflow_engine]`` defaults);
    - logging and warnings are off unless ``--verbose``: the command prints what matters,
      and its stdout may be JSON;
    - ``audit``: the call is recorded in Airflow's audit log, like ``airflow tasks clear``;
    - a :class:`CommandError` or an engine error (database unavailable, tables not migrated,
      engine not configured) prints one ``Error: ...`` line to stderr and exits with status 1;
      ``--verbose`` adds the traceback.
    """

    def decorate(func: Command) -> Command:
        from airflow.utils.cli import action_cli, suppress_logs_and_warning
        from airflow.utils.providers_configuration_loader import providers_configuration_loaded

        inner: Command = suppress_logs_and_warning(providers_configuration_loaded(func))
        if audit:
            inner = action_cli(check_db=False)(inner)  # type: ignore[no-untyped-call]

        @functools.wraps(func)
        def run(args: Namespace) -> None:
            try:
                inner(args)
            except (CommandError, WorkflowEngineError) as exc:
                if getattr(args, "verbose", False):
                    traceback.print_exc()
                print(f"Error: {' '.join(str(exc).split())}", file=sys.stderr)
                raise SystemExit(1) from None

        return run

    return decorate


# -- the engine's database -------------------------------------------------------------------


def engine_url(conn_id: str) -> str:
    """The SQLAlchemy URL of the engine's tables: the connection ``conn_id``, else
    ``[workflow_engine] sql_alchemy_conn`` (``EngineNotConfiguredError`` says what to set)."""
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

    return WorkflowEngineHook(conn_id).get_sql_url()


@contextmanager
def open_store(conn_id: str) -> Iterator[SqlPersistence]:
    """The engine's tables, checked to be migrated; closed afterwards."""
    from airflow_workflow_engine.persistence.sql.store import SqlPersistence

    store = SqlPersistence(engine_url(conn_id))
    try:
        store.check_schema()
        yield store
    finally:
        store.close()


def resolve_run(
    store: SqlPersistence,
    dag_id: str | None,
    run_id: str | None,
    workflow_run_id: str | None,
) -> RunRecord:
    """The workflow run named by ``DAG_ID RUN_ID`` or by ``--workflow-run-id``."""
    from airflow_workflow_engine.triggers.kernel_state import find_run_by_key, run_key

    if workflow_run_id:
        if dag_id or run_id:
            raise CommandError("Give either DAG_ID RUN_ID or --workflow-run-id, not both.")
        run = store.get_run(workflow_run_id)
        if run is None:
            raise CommandError(f"Workflow run '{workflow_run_id}' does not exist.")
        return run
    if not dag_id or not run_id:
        raise CommandError("Name the run: DAG_ID RUN_ID, or --workflow-run-id ID.")
    key = run_key(dag_id, run_id)
    found = find_run_by_key(store, key)
    if found is None:
        found = _the_group_run(store, key)
    if found is None:
        others = [split_key(r.idempotency_key)[1] for r in newest_runs(store, dag_id=dag_id)]
        hint = (
            f" DAG runs of '{dag_id}' that have one (newest first): {', '.join(map(str, others))}."
            if others
            else f" No run of DAG '{dag_id}' has one (its stage tasks never ran?)."
        )
        raise CommandError(f"DAG run '{key}' has no workflow run in the engine.{hint}")
    return found


def _the_group_run(store: SqlPersistence, key: str) -> RunRecord | None:
    """The one workflow run of a DAG run whose workflow is a ``WorkflowTaskGroup`` (key
    ``<dag_id>/<run_id>/<group_id>``); a DAG run with several groups must name the run."""
    from airflow_workflow_engine.triggers.kernel_state import split_run_key

    # newest_runs' "DAG id" filter matches the key prefix "<dag_id>/<run_id>/".
    runs = newest_runs(store, dag_id=key, limit=100)
    if len(runs) <= 1:
        return runs[0] if runs else None
    choices = ", ".join(f"{split_run_key(r.idempotency_key)[2]}: {r.id}" for r in runs)
    raise CommandError(
        f"DAG run '{key}' runs {len(runs)} workflow task groups; name one with "
        f"--workflow-run-id ({choices})."
    )


# -- dates --------------------------------------------------------------------------------


def parse_when(text: str, *, end: bool = False) -> datetime:
    """A date or date-time from the command line, timezone-aware.

    A date alone (``2026-01-31``) is the start of that day in Airflow's default timezone;
    with ``end=True`` it is the end of that day, so the day is included.
    """
    from airflow.sdk import timezone as airflow_timezone

    try:
        when: datetime = airflow_timezone.parse(text.strip(), strict=False)
    except Exception as exc:
        raise CommandError(
            f"Cannot read {text!r} as a date: use YYYY-MM-DD or an ISO 8601 date-time "
            "(2026-01-31T12:00:00+00:00)."
        ) from exc
    if end and _DATE_ONLY.match(text.strip()):
        when = when + timedelta(days=1) - timedelta(microseconds=1)
    return when


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC, to the second."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


# -- output -------------------------------------------------------------------------------


def money_text(value: float | Decimal | None) -> str:
    """``$0.000123`` (the ledger's format)."""
    from airflow_workflow_engine.ai.report import format_cost

    if value is None:
        return format_cost(None)
    return format_cost(value if isinstance(value, Decimal) else Decimal(repr(value)))


def preview(value: Any, width: int = PREVIEW_CHARS) -> str:
    """Compact JSON of ``value``, cut to ``width`` characters."""
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()
) -> str:
    """A plain-text table (``-`` for ``None``); columns in ``right`` are right-aligned."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in [list(headers), *cells]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])
