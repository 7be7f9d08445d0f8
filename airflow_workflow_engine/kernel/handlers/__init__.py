"""One handler per command. Each is ``handle(kernel, command) -> result``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine.kernel import commands as c
from airflow_workflow_engine.kernel.handlers import (
    job_execute,
    lease_reap_stale,
    outbox_flush,
    plugin_replay_dlq,
    run_cancel,
    run_claim_pending,
    run_create,
    run_reap_stuck,
    run_rerun_from,
    run_rerun_stages,
    run_transition,
    stage_poll_suspended,
)

Handler = Callable[[Any, Any], Any]

HANDLERS: dict[str, tuple[Handler, type[BaseModel]]] = {
    "run.create": (run_create.handle, c.RunCreateResult),
    "run.claimPending": (run_claim_pending.handle, c.RunClaimPendingResult),
    "run.transition": (run_transition.handle, c.RunTransitionResult),
    "run.cancel": (run_cancel.handle, c.RunCancelResult),
    "run.rerunFrom": (run_rerun_from.handle, c.RunRerunFromResult),
    "run.rerunStages": (run_rerun_stages.handle, c.RunRerunStagesResult),
    "job.execute": (job_execute.handle, c.JobExecuteResult),
    "stage.pollSuspended": (stage_poll_suspended.handle, c.StagePollSuspendedResult),
    "lease.reapStale": (lease_reap_stale.handle, c.LeaseReapStaleResult),
    "run.reapStuck": (run_reap_stuck.handle, c.RunReapStuckResult),
    "outbox.flush": (outbox_flush.handle, c.OutboxFlushResult),
    "plugin.replayDLQ": (plugin_replay_dlq.handle, c.PluginReplayDLQResult),
}
