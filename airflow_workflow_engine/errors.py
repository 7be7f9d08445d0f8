"""Typed exceptions. Every error the engine raises is a :class:`WorkflowEngineError`.

Messages name the workflow, stage and field involved and, where there is one, what to do next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "BlobNotFoundError",
    "BudgetExceededError",
    "ConfigValidationError",
    "DatabaseUnavailableError",
    "IdempotencyInProgressError",
    "InputValidationError",
    "InvalidTransitionError",
    "MigrationsNotAppliedError",
    "MissingStageOutputError",
    "ModelOutputError",
    "NonRetryableStageError",
    "OutputValidationError",
    "RunNotFoundError",
    "StageExistsError",
    "StageNotFoundError",
    "WorkflowDefinitionError",
    "WorkflowEngineError",
    "WorkflowNotFoundError",
    "format_validation_errors",
]


class WorkflowEngineError(Exception):
    """Base class of every error raised by airflow-workflow-engine."""

    #: Whether a stage that raised this error may be retried. Engine validation errors may not.
    retryable: bool = True


class WorkflowNotFoundError(WorkflowEngineError):
    retryable = False

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"Workflow '{workflow_id}' is not in the registry: register it with the kernel's "
            "registry (get_workflow must return it)."
        )


class RunNotFoundError(WorkflowEngineError):
    retryable = False

    def __init__(self, workflow_run_id: str) -> None:
        self.workflow_run_id = workflow_run_id
        super().__init__(f"Workflow run '{workflow_run_id}' does not exist.")


class StageNotFoundError(WorkflowEngineError):
    retryable = False

    def __init__(self, workflow_id: str, stage_id: str, known: Iterable[str] = ()) -> None:
        self.workflow_id = workflow_id
        self.stage_id = stage_id
        known_list = ", ".join(known)
        hint = f" Known stages: {known_list}." if known_list else ""
        super().__init__(f"Stage '{stage_id}' is not part of workflow '{workflow_id}'.{hint}")


class StageExistsError(WorkflowEngineError, ValueError):
    """``insert_stage`` found the run's stage row already there (another transaction made it)."""

    retryable = False

    def __init__(self, workflow_run_id: str, stage_id: str) -> None:
        self.workflow_run_id = workflow_run_id
        self.stage_id = stage_id
        super().__init__(f"stage {stage_id} of run {workflow_run_id} exists")


class WorkflowDefinitionError(WorkflowEngineError):
    """A workflow or stage definition is invalid (raised at build time)."""

    retryable = False


class _ValidationFailure(WorkflowEngineError):
    retryable = False

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.errors = errors or []
        super().__init__(message)

    @property
    def fields(self) -> list[str]:
        """Dotted paths of the fields that failed validation."""
        return [e["field"] for e in self.errors]


class InputValidationError(_ValidationFailure):
    """The workflow input (DAG run conf) or a stage's input does not match its model."""


class ConfigValidationError(_ValidationFailure):
    """A stage's config does not match its config model."""


class OutputValidationError(_ValidationFailure):
    """A stage (or the workflow) produced output that does not match its output model."""


class IdempotencyInProgressError(WorkflowEngineError):
    def __init__(self, key: str, command_type: str) -> None:
        self.key = key
        self.command_type = command_type
        super().__init__(
            f"A '{command_type}' command with idempotency key '{key}' is still executing; "
            "retry later to receive its result."
        )


class InvalidTransitionError(WorkflowEngineError):
    retryable = False

    def __init__(self, entity: str, current: str, target: str, detail: str = "") -> None:
        self.entity = entity
        self.current = current
        self.target = target
        extra = f" {detail}" if detail else ""
        super().__init__(f"Illegal {entity} transition {current} -> {target}.{extra}")


class NonRetryableStageError(WorkflowEngineError):
    """Raise from a stage to fail it at once, without retries."""

    retryable = False


class MissingStageOutputError(NonRetryableStageError):
    """A stage asked for an earlier stage's output that does not exist."""

    def __init__(self, stage_id: str, wanted: str, available: Iterable[str]) -> None:
        self.stage_id = stage_id
        self.wanted = wanted
        have = ", ".join(available) or "none"
        super().__init__(
            f"Stage '{stage_id}' requires the output of stage '{wanted}', which is not available "
            f"(completed earlier stages: {have}). Check the stage id and that '{wanted}' runs in "
            "an earlier group."
        )


class ModelOutputError(WorkflowEngineError):
    """A model's structured output did not validate, even after one repair attempt."""

    retryable = False


class BudgetExceededError(WorkflowEngineError):
    """A model call would start past a run's or stage's ``max_cost`` budget."""

    retryable = False


class DatabaseUnavailableError(WorkflowEngineError):
    """The engine's database cannot be reached."""


class MigrationsNotAppliedError(WorkflowEngineError):
    """The engine's tables are missing or out of date."""

    retryable = False


class BlobNotFoundError(WorkflowEngineError):
    retryable = False

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"Blob '{key}' was not found in the blob store.")


def format_validation_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Turns pydantic's ``ValidationError.errors()`` into ``[{field, message}]`` rows."""
    rows = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        rows.append({"field": loc, "message": str(err.get("msg", "invalid"))})
    return rows


def describe_errors(rows: list[dict[str, Any]]) -> str:
    """One-line description of validation rows: ``field: message; field: message``."""
    return "; ".join(f"{r['field']}: {r['message']}" for r in rows)
