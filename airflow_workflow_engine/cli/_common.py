"""What the ``airflow workflow-engine`` commands share: error handling, the engine's database,
dates in Airflow's timezone and tables. Finding a DAG run's workflow run and showing values are
the host layer's (:mod:`airflow_workflow_engine.host.queries`, :mod:`~airflow_workflow_engine.
host.format`), shared with the UI.

Imported only when a command runs (never by ``definition.py``).
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.host.format import PREVIEW_CHARS, iso, money_text, preview
from airflow_workflow_engine.host.format import parse_when as host_parse_when
from airflow_workflow_engine.host.queries import QueryError, newest_runs, resolve_run

if TYPE_CHECKING:
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
]

Command = Callable[[Namespace], None]

#: A wrong argument, or a DAG, run or stage that does not exist: one line, exit status 1.
CommandError = QueryError


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


# -- dates --------------------------------------------------------------------------------


def parse_when(text: str, *, end: bool = False) -> datetime:
    """A date or date-time from the command line in Airflow's default timezone (see
    :func:`airflow_workflow_engine.host.format.parse_when`)."""
    from airflow.sdk import timezone as airflow_timezone

    return host_parse_when(text, airflow_timezone.parse, end=end)


# -- output -------------------------------------------------------------------------------


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
