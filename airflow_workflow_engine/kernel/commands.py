"""Kernel commands and their results: pydantic models, one ``type`` string per command.

``kernel.dispatch`` takes a model or the equivalent dict (``{"type": "run.create", ...}``), so a
REST layer can pass JSON straight through.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from airflow_workflow_engine.definitions.annotations import Actor
from airflow_workflow_engine.kernel.status import Status

__all__ = [
    "AnnotationSpec",
    "ClaimedRun",
    "Command",
    "JobExecute",
    "JobExecuteResult",
    "LeaseReapStale",
    "LeaseReapStaleResult",
    "OutboxFlush",
    "OutboxFlushResult",
    "PluginReplayDLQ",
    "PluginReplayDLQResult",
    "PollOutcome",
    "PolledStage",
    "RunCancel",
    "RunCancelResult",
    "RunClaimPending",
    "RunClaimPendingResult",
    "RunCreate",
    "RunCreateResult",
    "RunReapStuck",
    "RunReapStuckResult",
    "RunRerunFrom",
    "RunRerunFromResult",
    "RunRerunStages",
    "RunRerunStagesResult",
    "RunTransition",
    "RunTransitionResult",
    "StagePollSuspended",
    "StagePollSuspendedResult",
    "parse_command",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AnnotationSpec(_Model):
    actor: Actor
    attributes: dict[str, Any]
    idempotency_key: str | None = None


# -- commands -----------------------------------------------------------------------------


class RunCreate(_Model):
    type: Literal["run.create"] = "run.create"
    workflow_id: str
    input: Any = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    priority: int = 5
    idempotency_key: str | None = None
    annotations: list[AnnotationSpec] = Field(default_factory=list)


class RunClaimPending(_Model):
    type: Literal["run.claimPending"] = "run.claimPending"
    worker_id: str = "kernel"
    max_runs: int = Field(10, ge=1)
    workflow_run_id: str | None = None


class RunTransition(_Model):
    type: Literal["run.transition"] = "run.transition"
    workflow_run_id: str


class RunCancel(_Model):
    """Cancel a run; authoritative. Also an external cancel: a host that saw its DAG run or a
    stage task fail (Airflow's listeners), or a user stop a deferred batch task."""

    type: Literal["run.cancel"] = "run.cancel"
    workflow_run_id: str
    reason: str | None = None
    #: Put the run's standing rejection (``approval.status`` = ``rejected``) before the reason:
    #: the rejection is the cause, the host's failure only follows from it.
    rejection_first: bool = False
    #: When the run is already cancelled: stop this suspended stage's external work (its
    #: ``on_cancel``) if the process that cancelled the run could not (it did not know the
    #: workflow).
    stop_stage_id: str | None = None


class RunRerunFrom(_Model):
    type: Literal["run.rerunFrom"] = "run.rerunFrom"
    workflow_run_id: str
    from_stage_id: str


class RunRerunStages(_Model):
    """Run these stages again; every other stage keeps its output (Airflow's "clear")."""

    type: Literal["run.rerunStages"] = "run.rerunStages"
    workflow_run_id: str
    stage_ids: list[str] = Field(min_length=1)
    #: Why, for the ``workflow:started`` event (e.g. "cleared in Airflow").
    reason: str | None = None
    #: Only when the first of ``stage_ids`` finished at an attempt below this one (a host's
    #: clear: the first try since the clear); otherwise nothing is done (``rerun=False``).
    if_finished_before_attempt: int | None = Field(None, ge=1)


class JobExecute(_Model):
    type: Literal["job.execute"] = "job.execute"
    workflow_run_id: str
    stage_id: str
    workflow_id: str | None = None
    job_id: str | None = None
    #: The delivery attempt (1-based) and how many the transport allows; under Airflow the
    #: task's try number and ``retries + 1``. ``None``: the kernel's own count and the default.
    attempt: int | None = Field(None, ge=1)
    max_attempts: int | None = Field(None, ge=1)
    worker_id: str | None = None
    idempotency_key: str | None = None


class StagePollSuspended(_Model):
    type: Literal["stage.pollSuspended"] = "stage.pollSuspended"
    max_checks: int = Field(10, ge=1)
    workflow_run_id: str | None = None
    stage_id: str | None = None


class LeaseReapStale(_Model):
    type: Literal["lease.reapStale"] = "lease.reapStale"
    stale_threshold_seconds: float = Field(60.0, gt=0)


class RunReapStuck(_Model):
    type: Literal["run.reapStuck"] = "run.reapStuck"
    stuck_threshold_seconds: float = Field(3600.0, gt=0)
    max_runs: int = Field(100, ge=1)


class OutboxFlush(_Model):
    type: Literal["outbox.flush"] = "outbox.flush"
    max_events: int = Field(100, ge=1)
    #: Failed deliveries of one event before it goes to the dead-letter queue.
    max_retries: int = Field(3, ge=1)
    #: Only this run's events, under the run's outbox lease: two flushers of one run never
    #: interleave, so its events are published in order.
    workflow_run_id: str | None = None


class PluginReplayDLQ(_Model):
    type: Literal["plugin.replayDLQ"] = "plugin.replayDLQ"
    max_events: int = Field(100, ge=1)
    #: Only this run's dead-lettered events.
    workflow_run_id: str | None = None


Command: TypeAlias = Annotated[
    RunCreate
    | RunClaimPending
    | RunTransition
    | RunCancel
    | RunRerunFrom
    | RunRerunStages
    | JobExecute
    | StagePollSuspended
    | LeaseReapStale
    | RunReapStuck
    | OutboxFlush
    | PluginReplayDLQ,
    Field(discriminator="type"),
]

_COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


def parse_command(data: Any) -> Command:
    """A command model from a model or a dict with ``"type"``."""
    if isinstance(data, BaseModel):
        return data  # type: ignore[return-value]
    return _COMMAND_ADAPTER.validate_python(data)


# -- results ------------------------------------------------------------------------------


class RunCreateResult(_Model):
    workflow_run_id: str
    status: Status
    replayed: bool = False


class ClaimedRun(_Model):
    workflow_run_id: str
    workflow_id: str
    job_ids: list[str]


class RunClaimPendingResult(_Model):
    claimed: list[ClaimedRun] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)


class RunTransitionResult(_Model):
    workflow_run_id: str
    action: Literal["noop", "advanced", "suspended", "completed", "failed"]
    status: Status
    group: int | None = None


class RunCancelResult(_Model):
    workflow_run_id: str
    cancelled: bool
    status: Status
    #: The reason recorded (with the rejection first when asked); ``None`` when not cancelled.
    reason: str | None = None
    #: ``stop_stage_id``'s ``on_cancel`` was called (the run was cancelled already).
    stopped_stage_work: bool = False


class RunRerunFromResult(_Model):
    workflow_run_id: str
    from_stage_id: str
    from_group: int
    deleted_stages: list[str]
    deleted_blobs: int


class RunRerunStagesResult(_Model):
    workflow_run_id: str
    status: Status
    #: The stages whose rows were dropped (finished ones only; others were left alone).
    deleted_stages: list[str]
    deleted_blobs: int
    #: ``False``: ``if_finished_before_attempt`` did not hold, nothing was done.
    rerun: bool = True
    #: The first stage's row before the rerun (status and attempt), when it had one.
    previous_status: Status | None = None
    previous_attempt: int | None = None


class JobExecuteResult(_Model):
    workflow_run_id: str
    stage_id: str
    outcome: Literal["completed", "suspended", "failed", "cancelled"]
    attempt: int
    output: Any = None
    error: str | None = None
    #: The run was cancelled (or failed) while the stage ran: the result was discarded.
    ghost: bool = False
    #: The stage will run again (at ``retry_at``); only for a retryable failure.
    retry: bool = False
    retry_at: datetime | None = None
    next_poll_at: datetime | None = None
    #: A duplicate delivery of a finished stage: the stored result, body not run again.
    replayed: bool = False
    #: Completed: where the output is stored when it went to the blob store (``output`` is
    #: then the value itself only for a replay), and the stage's metrics as stored.
    output_ref: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    #: Suspended: the stage's poll interval in seconds.
    poll_interval: float | None = None


class PollOutcome(_Model):
    workflow_run_id: str
    stage_id: str
    outcome: Literal["completed", "requeued", "pending", "failed", "timed_out", "skipped", "error"]
    error: str | None = None
    next_poll_at: datetime | None = None


class PolledStage(_Model):
    """The row of the one stage a poll named (``workflow_run_id`` + ``stage_id``), after it."""

    #: ``None``: the row is gone (the stage was rerun).
    status: Status | None
    error: str | None = None
    next_poll_at: datetime | None = None
    #: ``None``: the run is gone.
    run_status: Status | None = None
    #: The kernel's clock when it was read.
    checked_at: datetime


class StagePollSuspendedResult(_Model):
    outcomes: list[PollOutcome] = Field(default_factory=list)
    #: With ``workflow_run_id`` and ``stage_id``, when the poll did not finish that stage: its
    #: row now (a host's trigger works out what to wait for from it).
    stage: PolledStage | None = None

    @property
    def checked(self) -> int:
        return len(self.outcomes)

    @property
    def resumed_run_ids(self) -> list[str]:
        """Runs that need a ``run.transition``: a stage finished, failed or was re-queued."""
        done = {"completed", "requeued", "failed", "timed_out"}
        return sorted({o.workflow_run_id for o in self.outcomes if o.outcome in done})


class LeaseReapStaleResult(_Model):
    released: int


class RunReapStuckResult(_Model):
    reaped: list[str] = Field(default_factory=list)


class OutboxFlushResult(_Model):
    published: int = 0
    failed: int = 0
    dead_lettered: int = 0
    #: Another flusher holds the run's outbox lease: nothing was done; try again shortly.
    busy: bool = False


class PluginReplayDLQResult(_Model):
    replayed: int = 0
