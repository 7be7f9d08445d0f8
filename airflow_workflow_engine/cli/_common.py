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
from airflow_workflow_engine.host.format import PREVIEW_CHARS, exact, iso, money_text, preview
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
    "OUTPUTS",
    "print_json",
    "print_listing",
    "print_structured",
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


#: ``-o/--output``, as ``airflow dags list`` takes it (``ARG_OUTPUT`` of Airflow's CLI).
OUTPUTS = ("table", "json", "yaml", "plain")


def print_json(data: Any) -> None:
    print(json.dumps(exact(data), indent=2, default=str, ensure_ascii=False))


def print_structured(data: Any, output: str) -> None:
    """``data`` (a dict or a list) as JSON or YAML through Airflow's ``AirflowConsole``, with
    amounts as exact decimal strings and numbers kept numbers."""
    from airflow.cli.simple_table import AirflowConsole

    console = AirflowConsole()
    if output == "yaml":
        console.print_as_yaml(exact(data))
    else:
        console.print_as_json(exact(data))


def print_listing(
    rows: Sequence[dict[str, Any]],
    output: str,
    *,
    mapper: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    empty: str = "No data found",
) -> None:
    """A listing as ``airflow dags list`` prints one (``AirflowConsole.print_as``): ``json`` and
    ``yaml`` get the full ``rows``; ``table`` and ``plain`` the columns of ``mapper`` (a row to
    ``{HEADER: cell}``), ``-`` for an empty cell."""
    from airflow.cli.simple_table import AirflowConsole

    if output in ("json", "yaml"):
        print_structured(list(rows), output)
        return
    if not rows:
        print(empty)
        return
    cells = [
        {k: "-" if v is None else v for k, v in (mapper(r) if mapper else r).items()} for r in rows
    ]
    AirflowConsole().print_as(data=cells, output=output)


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
