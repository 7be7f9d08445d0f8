"""``plugin.replayDLQ``: put dead-lettered events back in the outbox for the next flush."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine.kernel.commands import PluginReplayDLQ, PluginReplayDLQResult

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel


def handle(k: Kernel, cmd: PluginReplayDLQ) -> PluginReplayDLQResult:
    events = k.persistence.list_dlq_events(cmd.max_events, cmd.workflow_run_id)
    replayed = k.persistence.requeue_dlq_events([e.id for e in events])
    return PluginReplayDLQResult(replayed=replayed)
