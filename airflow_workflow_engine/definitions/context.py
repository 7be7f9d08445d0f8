"""The context a stage's ``execute`` and ``check_completion`` receive."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import BaseModel

from airflow_workflow_engine.definitions.annotations import (
    Actor,
    PendingAnnotation,
    TypedKey,
    coerce_actor,
)
from airflow_workflow_engine.errors import MissingStageOutputError, WorkflowEngineError

if TYPE_CHECKING:
    from airflow_workflow_engine.blob.scoped import ScopedBlobStore

__all__ = ["LogEntry", "ProgressUpdate", "StageBuffer", "StageContext"]

InputT = TypeVar("InputT")
ConfigT = TypeVar("ConfigT")

logger = logging.getLogger("airflow_workflow_engine.stage")

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING}
_LEVELS |= {"WARNING": logging.WARNING, "ERROR": logging.ERROR}


@dataclass(frozen=True)
class LogEntry:
    level: str
    message: str
    fields: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class ProgressUpdate:
    fraction: float
    message: str | None
    at: datetime


@dataclass
class StageBuffer:
    """What a stage body produced besides its output; committed with the stage outcome."""

    annotations: list[PendingAnnotation] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    progress: list[ProgressUpdate] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class StageContext(Generic[InputT, ConfigT]):
    """Everything a stage may use: its typed input and config, earlier outputs, logging,
    progress, annotations, the run's blob scope and (when configured) the AI helper."""

    def __init__(
        self,
        *,
        workflow_run_id: str,
        workflow_id: str,
        stage_id: str,
        input: InputT,
        config: ConfigT,
        workflow_context: Mapping[str, BaseModel],
        attempt: int = 1,
        resume_state: dict[str, Any] | None = None,
        blobs: ScopedBlobStore | None = None,
        now: Callable[[], datetime],
        on_progress: Callable[[ProgressUpdate], None] | None = None,
        ai_factory: Callable[[StageContext[Any, Any]], Any] | None = None,
        execution_id: str | None = None,
        execution_created_at: datetime | None = None,
    ) -> None:
        self.workflow_run_id = workflow_run_id
        self.workflow_id = workflow_id
        self.stage_id = stage_id
        self.input = input
        self.config = config
        # A caller's dict is copied (it may change it later); the kernel's read-only mapping
        # is kept as it is, so its outputs are validated only when the stage reads them.
        self.workflow_context: Mapping[str, BaseModel] = (
            dict(workflow_context) if isinstance(workflow_context, dict) else workflow_context
        )
        self.attempt = attempt
        #: The stage's row in this run: kept by its retries and resumes, new after a rerun.
        self.execution_id = execution_id
        #: When that row was created, given when an earlier attempt of this execution was
        #: lost (its worker died): the answers it recorded since are reused, not paid again.
        self.execution_created_at = execution_created_at
        self.resume_state = resume_state
        self._blobs = blobs
        self._now = now
        self._on_progress = on_progress
        self._ai_factory = ai_factory
        self._ai: Any = None
        self.buffer = StageBuffer()

    # -- earlier outputs -------------------------------------------------------------------
    def require(self, stage_id: str) -> Any:
        """The output of an earlier stage; raises :class:`MissingStageOutputError` if absent."""
        try:
            return self.workflow_context[stage_id]
        except KeyError:
            raise MissingStageOutputError(
                self.stage_id, stage_id, self.workflow_context.keys()
            ) from None

    def optional(self, stage_id: str) -> Any | None:
        """The output of an earlier stage, or ``None``."""
        return self.workflow_context.get(stage_id)

    # -- observability ---------------------------------------------------------------------
    def log(self, level: str, message: str, **fields: Any) -> None:
        """Logs now (Python logging, so Airflow's task log shows it) and stores the entry with
        the stage outcome."""
        lvl = level.upper()
        logger.log(_LEVELS.get(lvl, logging.INFO), "[%s] %s %s", self.stage_id, message, fields)
        self.buffer.logs.append(LogEntry(lvl, message, dict(fields), self._now()))

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Reports progress in ``[0, 1]``."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within [0, 1], got {fraction}")
        update = ProgressUpdate(float(fraction), message, self._now())
        self.buffer.progress.append(update)
        logger.info("[%s] progress %.0f%% %s", self.stage_id, fraction * 100, message or "")
        if self._on_progress is not None:
            self._on_progress(update)

    def metric(self, name: str, value: Any) -> None:
        """Records a custom metric on the stage (merged with ``StageResult.custom_metrics``)."""
        self.buffer.metrics[name] = value

    # -- provenance ------------------------------------------------------------------------
    @overload
    def annotate(self, key: str | TypedKey[Any], value: Any, /) -> None: ...

    @overload
    def annotate(self, *, actor: Actor | dict[str, Any], attributes: Mapping[str, Any]) -> None: ...

    @overload
    def annotate(self, spec: Mapping[str, Any], /) -> None: ...

    def annotate(
        self,
        key: str | TypedKey[Any] | Mapping[str, Any] | None = None,
        value: Any = None,
        *,
        actor: Actor | dict[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Buffers annotations; they commit atomically with the stage outcome.

        ``annotate("key", value)``, ``annotate(Decision.outcome, "low")`` or
        ``annotate(actor={"kind": "agent", "id": "triage"}, attributes={...})``.
        """
        if isinstance(key, Mapping):
            spec = key
            actor, attributes = spec.get("actor"), spec.get("attributes")
            key = None
        if key is not None:
            attributes = {str(key): value}
        if not attributes:
            raise ValueError("annotate() needs a key and value, or actor= and attributes=")
        who = coerce_actor(actor) if actor is not None else Actor(kind="stage", id=self.stage_id)
        for k, v in attributes.items():
            self.buffer.annotations.append(PendingAnnotation(str(k), v, who))

    # -- resources -------------------------------------------------------------------------
    @property
    def blobs(self) -> ScopedBlobStore:
        """The blob store, scoped to ``runs/<run_id>/stages/<stage_id>/``."""
        if self._blobs is None:
            raise WorkflowEngineError("No blob store is configured for this kernel.")
        return self._blobs

    @property
    def ai(self) -> Any:
        """The AI helper bound to this stage's topic and the run's ledger."""
        if self._ai is None:
            if self._ai_factory is None:
                raise WorkflowEngineError(
                    "ctx.ai is not configured: create the kernel with an ai_factory "
                    "(airflow_workflow_engine.ai) or run the stage under the Airflow provider."
                )
            self._ai = self._ai_factory(self)
        return self._ai

    def __repr__(self) -> str:
        return f"StageContext(run={self.workflow_run_id!r}, stage={self.stage_id!r})"
