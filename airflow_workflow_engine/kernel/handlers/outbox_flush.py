"""``outbox.flush``: publish pending events in per-run order; failures retry, then dead-letter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine.kernel.commands import OutboxFlush, OutboxFlushResult

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel


def handle(k: Kernel, cmd: OutboxFlush) -> OutboxFlushResult:
    published = failed = dead_lettered = 0
    blocked: set[str] = set()
    for event in k.persistence.list_unpublished_events(cmd.max_events):
        if event.workflow_run_id in blocked:
            continue  # keep this run's order: later events wait for the failed one
        try:
            k.event_sink.publish(event)
        except Exception as exc:
            retries = event.retry_count + 1
            dlq_at = k.now() if retries >= cmd.max_retries else None
            k.persistence.record_event_failure(
                event.id, f"{type(exc).__name__}: {exc}", retries, dlq_at
            )
            failed += 1
            if dlq_at is not None:
                dead_lettered += 1
            else:
                blocked.add(event.workflow_run_id)
            continue
        k.persistence.mark_event_published(event.id, k.now())
        published += 1
    return OutboxFlushResult(published=published, failed=failed, dead_lettered=dead_lettered)
