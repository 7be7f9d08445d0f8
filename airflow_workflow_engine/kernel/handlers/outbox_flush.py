"""``outbox.flush``: publish pending events in per-run order; failures retry, then dead-letter.

Delivery is at least once: an event is marked published after the sink returned, so a flusher
that dies in between publishes it again next time. With ``workflow_run_id`` the flush holds
the run's outbox lease (a short-lived claim in the idempotency table) so that two processes
flushing one run (the stage tasks of a parallel group) never interleave its events; a flush
that finds the lease taken does nothing and says ``busy``. A lease left by a dead process
expires after ``KernelSettings.idempotency_ttl_seconds``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow_workflow_engine.errors import IdempotencyInProgressError
from airflow_workflow_engine.kernel.commands import OutboxFlush, OutboxFlushResult

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel

#: The idempotency-table key type of a run's outbox lease.
LEASE_TYPE = "outbox.flush.lease"


def handle(k: Kernel, cmd: OutboxFlush) -> OutboxFlushResult:
    if cmd.workflow_run_id is None:
        return _flush(k, cmd)
    key = f"outbox.flush/{cmd.workflow_run_id}"
    now = k.now()
    expires = now + timedelta(seconds=k.settings.idempotency_ttl_seconds)
    try:
        # Never completed, only released: a completed record would be "replayed" forever.
        k.persistence.acquire_idempotency(key, LEASE_TYPE, now=now, expires_at=expires)
    except IdempotencyInProgressError:
        return OutboxFlushResult(busy=True)
    try:
        return _flush(k, cmd)
    finally:
        k.persistence.release_idempotency(key, LEASE_TYPE)


def _flush(k: Kernel, cmd: OutboxFlush) -> OutboxFlushResult:
    failed = dead_lettered = 0
    blocked: set[str] = set()
    delivered: list[str] = []
    for event in k.persistence.list_unpublished_events(cmd.max_events, cmd.workflow_run_id):
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
        delivered.append(event.id)
    # One write for the batch (a flusher that dies before it republishes the batch: still at
    # least once).
    if delivered:
        k.persistence.mark_events_published(delivered, k.now())
    return OutboxFlushResult(published=len(delivered), failed=failed, dead_lettered=dead_lettered)
