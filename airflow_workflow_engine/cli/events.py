"""``airflow workflow-engine events list|dlq|replay|flush``: the outbox and its dead letters.

Stage tasks deliver their run's events to the ``[workflow_engine] event_plugins`` as they go
(:mod:`airflow_workflow_engine.hooks.events`). An event whose plugin kept failing lands in the
dead-letter queue after ``event_max_retries`` deliveries; ``events dlq`` shows it with the last
error, ``events replay`` puts it back in the outbox and delivers it with the plugins this
process loads (fix the plugin first), ``events flush`` delivers what is still pending.
"""

from __future__ import annotations

from argparse import Namespace
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.cli._common import (
    CommandError,
    cli_command,
    iso,
    open_store,
    preview,
    print_listing,
    resolve_run,
)
from airflow_workflow_engine.kernel.commands import OutboxFlush, OutboxFlushResult, PluginReplayDLQ

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.commands import OutboxFlushResult
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.records import OutboxEvent

__all__ = ["events_dlq", "events_flush", "events_list", "events_replay"]

_HEADERS = ["RUN", "SEQ", "TYPE", "OCCURRED", "STATE", "TRIES", "LAST ERROR", "PAYLOAD"]


def _state(event: OutboxEvent) -> str:
    if event.dlq_at is not None:
        return "dead-lettered"
    return "published" if event.published_at is not None else "pending"


def _row(event: OutboxEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "workflow_run_id": event.workflow_run_id,
        "sequence": event.sequence,
        "type": event.type,
        "occurred_at": iso(event.occurred_at),
        "state": _state(event),
        "published_at": iso(event.published_at),
        "retry_count": event.retry_count,
        "dlq_at": iso(event.dlq_at),
        "last_error": event.last_error,
        "payload": event.payload,
    }


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    values = (
        row["workflow_run_id"],
        row["sequence"],
        row["type"],
        row["occurred_at"],
        row["state"],
        row["retry_count"],
        preview(row["last_error"], 60) if row["last_error"] else None,
        preview(row["payload"], 60),
    )
    return dict(zip(_HEADERS, values, strict=True))


def _print(events: list[OutboxEvent], output: str, empty: str) -> None:
    print_listing([_row(e) for e in events], output, mapper=_cells, empty=empty)


def _run_id(args: Namespace, *, required: bool) -> str | None:
    if not (args.dag_id or args.run_id or args.workflow_run_id):
        if required:
            raise CommandError("Name the run: DAG_ID RUN_ID, or --workflow-run-id ID.")
        return None
    with open_store(args.conn_id) as store:
        return resolve_run(store, args.dag_id, args.run_id, args.workflow_run_id).id


def _kernel(args: Namespace) -> Kernel:
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

    return WorkflowEngineHook(args.conn_id).get_kernel()


def _flush_all(kernel: Kernel, run_ids: list[str]) -> OutboxFlushResult:
    """Flushes each run under its outbox lease until nothing is left to try."""
    from airflow_workflow_engine.hooks.events import event_max_retries

    total = OutboxFlushResult()
    retries = event_max_retries()
    for run_id in run_ids:
        result = kernel.dispatch(OutboxFlush(workflow_run_id=run_id, max_retries=retries))
        if result.busy:
            raise CommandError(
                f"Workflow run {run_id}: another process is delivering its events right now; "
                "try again in a moment."
            )
        total = OutboxFlushResult(
            published=total.published + result.published,
            failed=total.failed + result.failed,
            dead_lettered=total.dead_lettered + result.dead_lettered,
        )
    return total


def _plugins_text(kernel: Kernel) -> str:
    plugins = getattr(kernel.event_sink, "plugins", None) or []
    names = ", ".join(p.id for p in plugins) or "none: [workflow_engine] event_plugins is empty"
    return f"plugins: {names}"


@cli_command()
def events_list(args: Namespace) -> None:
    """The outbox events of one workflow run, in order, with their delivery state."""
    run_id = _run_id(args, required=True)
    assert run_id is not None
    with open_store(args.conn_id) as store:
        events = store.list_events(run_id)
    if args.pending:
        events = [e for e in events if e.published_at is None]
    _print(events[-args.limit :] if args.limit else events, args.output, "No events.")


@cli_command()
def events_dlq(args: Namespace) -> None:
    """Dead-lettered events (of every run, or of one), with the last error."""
    run_id = _run_id(args, required=False)
    with open_store(args.conn_id) as store:
        events = store.list_dlq_events(args.limit, run_id)
    _print(events, args.output, "The dead-letter queue is empty.")


@cli_command(audit=True)
def events_replay(args: Namespace) -> None:
    """Puts dead-lettered events back in the outbox and delivers them."""
    run_id = _run_id(args, required=False)
    kernel = _kernel(args)
    dead = kernel.persistence.list_dlq_events(args.limit, run_id)
    if not dead:
        print("The dead-letter queue is empty: nothing to replay.")
        return
    replayed = kernel.dispatch(PluginReplayDLQ(max_events=args.limit, workflow_run_id=run_id))
    result = _flush_all(kernel, sorted({e.workflow_run_id for e in dead}))
    print(
        f"Replayed {replayed.replayed} dead-lettered event(s): {result.published} delivered, "
        f"{result.failed} failed again ({result.dead_lettered} back in the dead-letter queue); "
        f"{_plugins_text(kernel)}."
    )
    if result.failed:
        raise SystemExit(1)


@cli_command(audit=True)
def events_flush(args: Namespace) -> None:
    """Delivers the pending events of one run (or of every run with pending events)."""
    run_id = _run_id(args, required=False)
    kernel = _kernel(args)
    if run_id is None:
        pending = kernel.persistence.list_unpublished_events(args.limit)
        run_ids = sorted({e.workflow_run_id for e in pending})
    else:
        run_ids = [run_id]
    result = _flush_all(kernel, run_ids)
    print(
        f"Delivered {result.published} event(s) of {len(run_ids)} run(s); {result.failed} "
        f"failed ({result.dead_lettered} dead-lettered); {_plugins_text(kernel)}."
    )
    if result.failed:
        raise SystemExit(1)
