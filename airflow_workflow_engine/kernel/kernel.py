"""The command kernel: ``create_kernel(...)`` and ``kernel.dispatch(command)``.

The kernel decides; hosts (the in-process test driver, Airflow's operators and triggers)
decide when and where. It holds no lock and no transaction while user code runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import cached_property
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from airflow_workflow_engine.blob.scoped import ScopedBlobStore, stage_prefix
from airflow_workflow_engine.definitions.context import ProgressUpdate, StageBuffer, StageContext
from airflow_workflow_engine.definitions.workflow import Workflow
from airflow_workflow_engine.errors import RunNotFoundError, WorkflowNotFoundError
from airflow_workflow_engine.kernel import commands as c
from airflow_workflow_engine.kernel.annotations import AnnotationsApi
from airflow_workflow_engine.kernel.executor import LocalExecutor
from airflow_workflow_engine.kernel.ports import (
    ActivityExecutor,
    BlobStore,
    Clock,
    EventSink,
    JobRequest,
    JobTransport,
    Persistence,
    Scheduler,
    WorkflowRegistry,
)
from airflow_workflow_engine.kernel.records import (
    AnnotationRecord,
    LogRecord,
    OutboxEvent,
    RunRecord,
    StageRecord,
    new_id,
)
from airflow_workflow_engine.kernel.stage_io import build_workflow_context, resolve_stage_input
from airflow_workflow_engine.kernel.status import Status, check_run_transition

__all__ = ["CostLedger", "Kernel", "KernelSettings", "SystemClock", "create_kernel"]

logger = logging.getLogger("airflow_workflow_engine.kernel")

T = TypeVar("T")
#: A ledger's ``run_and_stage_totals``: ((run cost, run tokens), (stage cost, stage tokens)).
AiTotals = tuple[tuple[Decimal, int], tuple[Decimal, int]]

#: ``json.dumps(value, separators=(",", ":"))`` without building an encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class CostLedger(Protocol):
    """What the kernel reads from the AI cost ledger (``airflow_workflow_engine.ai.ledger``):
    stage metrics and run totals are rolled up from it, never reported by stage code."""

    def totals(self, workflow_run_id: str, stage_id: str | None = None) -> tuple[Decimal, int]:
        """``(cost in USD, input + output tokens)`` of a run, or of one of its stages."""
        ...


@dataclass(frozen=True)
class KernelSettings:
    #: Stage outputs whose JSON is larger than this go to the blob store.
    output_blob_threshold: int = 256 * 1024
    #: An in-progress idempotency key older than this may be taken over.
    idempotency_ttl_seconds: float = 600.0
    #: Attempts per stage when the command does not say (the job transport's, if it has one).
    default_max_attempts: int = 3


class Kernel:
    """Dispatches commands against the ports it was created with."""

    def __init__(
        self,
        *,
        persistence: Persistence,
        blob_store: BlobStore,
        job_transport: JobTransport,
        event_sink: EventSink,
        scheduler: Scheduler,
        clock: Clock,
        registry: WorkflowRegistry,
        executor: ActivityExecutor | None = None,
        settings: KernelSettings | None = None,
        ai_factory: Callable[[StageContext[Any, Any]], Any] | None = None,
        on_progress: Callable[[str, str, ProgressUpdate], None] | None = None,
        ledger: CostLedger | None = None,
    ) -> None:
        self.persistence = persistence
        self.blob_store = blob_store
        self.job_transport = job_transport
        self.event_sink = event_sink
        self.scheduler = scheduler
        self.clock = clock
        self.registry = registry
        self.executor: ActivityExecutor = executor or LocalExecutor()
        self.settings = settings or KernelSettings()
        self.ai_factory = ai_factory
        self.on_progress = on_progress
        self.ledger = ledger
        self.annotations = AnnotationsApi(self)
        from airflow_workflow_engine.kernel.handlers import HANDLERS

        self._handlers = HANDLERS

    @cached_property
    def _outcome_read(self) -> Callable[[str, str], tuple[Any, list[StageRecord], Any]] | None:
        """The store's ``get_run_with_stages_and_ai_sums`` when the ledger's totals can be
        read with the run (the ledger shares the store's engine), else ``None``."""
        read = getattr(self.persistence, "get_run_with_stages_and_ai_sums", None)
        shares = getattr(self.ledger, "shares_engine_with", None)
        if read is None or shares is None or not shares(self.persistence):
            return None
        return read  # type: ignore[no-any-return]

    # -- dispatch --------------------------------------------------------------------------
    def dispatch(self, command: c.Command | BaseModel | dict[str, Any]) -> Any:
        """Runs one command and returns its typed result.

        Commands with an ``idempotency_key`` replay the first result; the same key while the
        first is still executing raises ``IdempotencyInProgressError``; a command that raises
        releases its key.
        """
        cmd = c.parse_command(command)
        handler, result_type = self._handlers[cmd.type]
        # Read from the fields: getattr on a model without the field raises inside pydantic.
        key = cmd.__dict__.get("idempotency_key")
        if key is None:
            return handler(self, cmd)
        now = self.now()
        ttl = timedelta(seconds=self.settings.idempotency_ttl_seconds)
        cached = self.persistence.acquire_idempotency(key, cmd.type, now=now, expires_at=now + ttl)
        if cached is not None:
            result = result_type.model_validate(cached.result)
            if "replayed" in result_type.model_fields:
                result = result.model_copy(update={"replayed": True})
            return result
        try:
            result = handler(self, cmd)
        except BaseException:
            self.persistence.release_idempotency(key, cmd.type)
            raise
        self.persistence.complete_idempotency(key, cmd.type, result.model_dump(mode="json"))
        return result

    # -- helpers for handlers --------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    @staticmethod
    def new_id() -> str:
        return new_id()

    def model_providers(self) -> list[str] | None:
        """The providers model keys in stage config may name, when the ``ai_factory`` says
        (its ``model_providers()``); ``None``: not known here, so not checked."""
        names = getattr(self.ai_factory, "model_providers", None)
        return sorted(names()) if callable(names) else None

    def workflow(self, workflow_id: str) -> Workflow:
        wf = self.registry.get_workflow(workflow_id)
        if wf is None:
            raise WorkflowNotFoundError(workflow_id)
        return wf

    def require_run(self, workflow_run_id: str, *, for_update: bool = False) -> RunRecord:
        run = self.persistence.get_run(workflow_run_id, for_update=for_update)
        if run is None:
            raise RunNotFoundError(workflow_run_id)
        return run

    def require_run_with_stages(
        self, workflow_run_id: str, *, for_update: bool = False
    ) -> tuple[RunRecord, list[StageRecord]]:
        """The run and its stage rows (outputs in the blob store not loaded), one read."""
        run, stages = self.persistence.get_run_with_stages(workflow_run_id, for_update=for_update)
        if run is None:
            raise RunNotFoundError(workflow_run_id)
        return run, stages

    def emit(
        self, workflow_run_id: str, type: str, payload: dict[str, Any] | None = None
    ) -> OutboxEvent:
        return self.persistence.append_event(
            workflow_run_id, type, payload or {}, occurred_at=self.now()
        )

    def emit_with_run_changes(
        self, run: RunRecord, type: str, payload: dict[str, Any], **changes: Any
    ) -> RunRecord:
        """``update_run(run.id, **changes)`` and ``emit(...)`` in one write (one statement on
        PostgreSQL); returns the run as changed. ``run``: as read in this transaction."""
        event = self.persistence.append_event(
            run.id, type, payload, occurred_at=self.now(), run_changes=changes
        )
        return run.evolve(**{**changes, "event_sequence": event.sequence})

    def set_run_status_and_emit(
        self, run: RunRecord, target: Status, type: str, payload: dict[str, Any], **changes: Any
    ) -> RunRecord:
        """``set_run_status`` and ``emit`` in one write."""
        check_run_transition(run.status, target, f"(run {run.id})")
        return self.emit_with_run_changes(
            run, type, payload, status=target, updated_at=self.now(), **changes
        )

    def set_run_status(self, run: RunRecord, target: Status, **changes: Any) -> RunRecord:
        check_run_transition(run.status, target, f"(run {run.id})")
        return self.persistence.update_run(run.id, status=target, updated_at=self.now(), **changes)

    def start_group(
        self,
        run: RunRecord,
        workflow: Workflow,
        number: int,
        existing: Collection[str] | None = None,
    ) -> list[str]:
        """Creates the group's stage rows (idempotently) and enqueues one job per stage.

        ``existing``: the run's stage ids as read in this transaction (else they are read).
        """
        now = self.now()
        group = workflow.group(number)
        if existing is None:
            if len(group) == 1:
                found = self.persistence.get_stage(run.id, group[0].id)
                existing = () if found is None else (found.stage_id,)
            else:
                existing = {s.stage_id for s in self.persistence.list_stages(run.id)}
        requests = []
        for st in group:
            if st.id in existing:
                continue
            self.persistence.insert_stage(
                StageRecord.trusted(
                    id=self.new_id(),
                    workflow_run_id=run.id,
                    stage_id=st.id,
                    stage_name=st.name,
                    stage_number=workflow.stage_number(st.id),
                    execution_group=number,
                    config=dict(run.config.get(st.id, {})),
                    created_at=now,
                    updated_at=now,
                )
            )
            requests.append(
                JobRequest(
                    workflow_run_id=run.id,
                    workflow_id=run.workflow_id,
                    stage_id=st.id,
                    priority=run.priority,
                )
            )
        return self.job_transport.enqueue_parallel(requests) if requests else []

    def cancel_open_stages(self, run_id: str, reason: str) -> list[StageRecord]:
        """Marks every non-terminal stage of a run CANCELLED (cascade of a cancel or failure)."""
        now = self.now()
        cancelled = []
        for rec in self.persistence.list_stages(run_id):
            if not rec.status.is_terminal:
                cancelled.append(rec)
                self.persistence.update_stage(
                    run_id,
                    rec.stage_id,
                    status=Status.CANCELLED,
                    next_poll_at=None,
                    error_message=reason,
                    updated_at=now,
                    completed_at=now,
                )
        return cancelled

    def fail_run(self, run: RunRecord, error: str) -> RunRecord:
        """FAILED with the stage's error; open stages are cancelled. Call inside a transaction."""
        self.cancel_open_stages(run.id, f"run failed: {error}")
        run = self.set_run_status(
            run,
            Status.FAILED,
            error_message=error,
            completed_at=self.now(),
            **self.run_ai_totals(run.id),
        )
        self.emit(run.id, "workflow:failed", {"error": error})
        return run

    # -- AI costs (rolled up from the ledger) ----------------------------------------------
    def stage_ai_metrics(self, run_id: str, stage_id: str) -> dict[str, Any]:
        """``{"ai_cost", "ai_tokens"}`` of a stage (all attempts), or ``{}`` without a ledger."""
        if self.ledger is None:
            return {}
        cost, tokens = self.ledger.totals(run_id, stage_id)
        return {"ai_cost": float(cost), "ai_tokens": tokens}

    def run_ai_totals(self, run_id: str) -> dict[str, Any]:
        """``{"total_cost", "total_tokens"}`` run-record changes, or ``{}`` without a ledger."""
        if self.ledger is None:
            return {}
        cost, tokens = self.ledger.totals(run_id)
        return {"total_cost": float(cost), "total_tokens": tokens}

    def mark_ai_calls_failed(self, run_id: str, stage_id: str, attempt: int, failure: str) -> None:
        """Marks the ledger rows of a failed stage attempt with what failed (the calls stay
        recorded: they were paid for). Its own short write, so call it outside transactions;
        a ledger without ``mark_failed`` or one that cannot be written only logs."""
        mark = getattr(self.ledger, "mark_failed", None)
        if mark is None:
            return
        try:
            mark(run_id, stage_id, attempt, failure)
        except Exception:
            logger.exception("could not mark the AI ledger rows of %s/%s", run_id, stage_id)

    def require_run_for_outcome(
        self, workflow_run_id: str, stage_id: str
    ) -> tuple[RunRecord, list[StageRecord], AiTotals | None]:
        """``require_run_with_stages(workflow_run_id, for_update=True)`` and, when the store
        can read them in the same statement (a ``SqlLedger`` on a ``SqlPersistence``'s
        engine), the ledger's totals of the run and of ``stage_id`` for
        :meth:`refresh_ai_totals`; else ``None`` and that method asks the ledger."""
        read = self._outcome_read
        if read is None:
            run, stages = self.persistence.get_run_with_stages(workflow_run_id, for_update=True)
            if run is None:
                raise RunNotFoundError(workflow_run_id)
            return run, stages, None
        found, stages, sums = read(workflow_run_id, stage_id)
        if found is None:
            raise RunNotFoundError(workflow_run_id)
        totals: AiTotals = self.ledger.totals_from_sums(sums)  # type: ignore[union-attr]
        return found, stages, totals

    def refresh_ai_totals(
        self, run: RunRecord, stage_id: str, totals: AiTotals | None = None
    ) -> dict[str, Any]:
        """``refresh_run_ai_totals(run.id, run)`` and ``stage_ai_metrics(run.id, stage_id)``,
        in one ledger query when the ledger offers ``run_and_stage_totals``. ``totals``: the
        ledger's ``run_and_stage_totals`` as read in this transaction already."""
        if totals is None:
            both = getattr(self.ledger, "run_and_stage_totals", None)
            if both is None:
                self.refresh_run_ai_totals(run.id, run)
                return self.stage_ai_metrics(run.id, stage_id)
            totals = both(run.id, stage_id)
        (run_cost, run_tokens), (cost, tokens) = totals
        changes = {"total_cost": float(run_cost), "total_tokens": run_tokens}
        if any(getattr(run, k) != v for k, v in changes.items()):
            self.persistence.update_run(run.id, **changes)
        return {"ai_cost": float(cost), "ai_tokens": tokens}

    def refresh_run_ai_totals(self, run_id: str, current: RunRecord | None = None) -> None:
        """Copies the ledger's run totals onto the run record (inside the caller's transaction).

        ``current``: the run as read in this transaction; when its totals are already the
        ledger's (a stage that made no model call), nothing is written.
        """
        changes = self.run_ai_totals(run_id)
        if not changes:
            return
        if current is not None and all(getattr(current, k) == v for k, v in changes.items()):
            return
        self.persistence.update_run(run_id, **changes)

    # -- stage data ------------------------------------------------------------------------
    def store_output(self, run_id: str, stage_id: str, value: Any) -> dict[str, Any]:
        """Row fields for an output: inline, or in the blob store when it is large.

        Call outside transactions: the blob write is I/O.
        """
        data = _COMPACT_JSON.encode(value).encode()
        if len(data) <= self.settings.output_blob_threshold:
            return {"output": value, "output_ref": None}
        key = stage_prefix(run_id, stage_id) + "output.json"
        self.blob_store.put(key, data, "application/json")
        return {"output": None, "output_ref": key}

    def load_output(self, record: StageRecord) -> StageRecord:
        """The stage row with its output: read back from the blob store when
        :meth:`store_output` moved it there (``output_ref`` set), else the row as it is.

        Blob I/O: outside transactions where the caller can.
        """
        if record.output_ref is None:
            return record
        output = json.loads(self.blob_store.get(record.output_ref))
        return record.evolve(output=output)

    def list_stages(self, workflow_run_id: str) -> list[StageRecord]:
        """The run's stage rows in order, their outputs loaded (:meth:`load_output`)."""
        return [self.load_output(r) for r in self.persistence.list_stages(workflow_run_id)]

    def build_context(
        self,
        run: RunRecord,
        workflow: Workflow,
        stage_id: str,
        *,
        attempt: int,
        resume_state: dict[str, Any] | None,
        execution_id: str | None = None,
        records: Sequence[StageRecord] | None = None,
        execution_created_at: datetime | None = None,
    ) -> StageContext[Any, Any]:
        """Input, config and earlier outputs of a stage, validated. Raises the engine's
        validation errors (never retried). ``records``: the run's stage rows, when the caller
        read them already. Outputs in the blob store are loaded here: call it outside
        transactions."""
        st = workflow.get_stage(stage_id)
        rows = self.persistence.list_stages(run.id) if records is None else records
        if any(r.output_ref is not None for r in rows):
            rows = [self.load_output(r) for r in rows]
        context = build_workflow_context(workflow, rows, workflow.group_of(stage_id))
        stage_input = resolve_stage_input(workflow, run, st, context)
        config = workflow.stage_config(stage_id, run.config)
        on_progress = self.on_progress

        def report(update: ProgressUpdate) -> None:
            if on_progress is not None:
                on_progress(run.id, stage_id, update)

        return StageContext(
            workflow_run_id=run.id,
            workflow_id=run.workflow_id,
            stage_id=stage_id,
            input=stage_input,
            config=config,
            workflow_context=context,
            attempt=attempt,
            resume_state=resume_state,
            blobs=ScopedBlobStore(self.blob_store, stage_prefix(run.id, stage_id)),
            now=self.now,
            on_progress=report,
            ai_factory=self.ai_factory,
            execution_id=execution_id,
            execution_created_at=execution_created_at,
        )

    def persist_buffer(
        self, run_id: str, stage_id: str, buffer: StageBuffer, attempt: int | None
    ) -> None:
        """Annotations, logs and progress of one attempt. Call inside the outcome transaction."""
        if not (buffer.annotations or buffer.logs or buffer.progress):
            return
        now = self.now()
        for pending in buffer.annotations:
            self.persistence.insert_annotation(
                AnnotationRecord(
                    id=self.new_id(),
                    workflow_run_id=run_id,
                    stage_id=stage_id,
                    key=pending.key,
                    value=pending.value,
                    actor=pending.actor,
                    attempt=attempt,
                    created_at=now,
                )
            )
            self.emit(
                run_id,
                "annotation:created",
                {"stage_id": stage_id, "key": pending.key, "attempt": attempt},
            )
        if buffer.logs:
            self.persistence.insert_logs(
                [
                    LogRecord(
                        id=self.new_id(),
                        workflow_run_id=run_id,
                        stage_id=stage_id,
                        level=entry.level,
                        message=entry.message,
                        fields=entry.fields,
                        attempt=attempt,
                        created_at=entry.at,
                    )
                    for entry in buffer.logs
                ]
            )
            for entry in buffer.logs:
                self.emit(
                    run_id,
                    "log",
                    {"stage_id": stage_id, "level": entry.level, "message": entry.message},
                )
        for update in buffer.progress:
            self.emit(
                run_id,
                "stage:progress",
                {"stage_id": stage_id, "progress": update.fraction, "message": update.message},
            )
        if buffer.progress:
            last = buffer.progress[-1]
            self.persistence.update_stage(
                run_id, stage_id, progress=last.fraction, progress_message=last.message
            )

    def run_isolated(self, what: str, fn: Callable[[], T]) -> T | None:
        """Runs one unit of a batch command so that one bad run never blocks the others."""
        try:
            return fn()
        except Exception:
            logger.exception("%s failed; continuing with the others", what)
            return None


def create_kernel(
    *,
    persistence: Persistence,
    blob_store: BlobStore,
    job_transport: JobTransport,
    event_sink: EventSink,
    scheduler: Scheduler,
    clock: Clock | None = None,
    registry: WorkflowRegistry,
    executor: ActivityExecutor | None = None,
    settings: KernelSettings | None = None,
    ai_factory: Callable[[StageContext[Any, Any]], Any] | None = None,
    on_progress: Callable[[str, str, ProgressUpdate], None] | None = None,
    ledger: CostLedger | None = None,
) -> Kernel:
    """Builds a kernel from its ports. ``clock`` defaults to the system clock. ``ledger`` is
    the AI cost ledger stage metrics and run totals are rolled up from (none: they stay 0)."""
    return Kernel(
        persistence=persistence,
        blob_store=blob_store,
        job_transport=job_transport,
        event_sink=event_sink,
        scheduler=scheduler,
        clock=clock or SystemClock(),
        registry=registry,
        executor=executor,
        settings=settings,
        ai_factory=ai_factory,
        on_progress=on_progress,
        ledger=ledger,
    )


class DictRegistry:
    """A registry over a fixed set of workflows."""

    def __init__(self, workflows: Sequence[Workflow] = ()) -> None:
        self._workflows = {wf.id: wf for wf in workflows}

    def register(self, workflow: Workflow) -> None:
        self._workflows[workflow.id] = workflow

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        return self._workflows.get(workflow_id)
