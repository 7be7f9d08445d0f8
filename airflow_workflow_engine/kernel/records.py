"""Rows the kernel keeps through the Persistence port (in memory or in SQL tables)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from airflow_workflow_engine.definitions.annotations import Actor
from airflow_workflow_engine.kernel.status import Status

__all__ = [
    "AnnotationRecord",
    "IdempotencyRecord",
    "Job",
    "LogRecord",
    "OutboxEvent",
    "RunRecord",
    "StageRecord",
    "new_id",
]

R = TypeVar("R", bound="_Record")

_set_attribute = object.__setattr__
# The version (4) and variant (RFC 4122) bits of a random UUID.
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)


def new_id() -> str:
    """A new row id: a random UUID (version 4) in 32 hex digits, like ``uuid.uuid4().hex``
    at less than half its cost (a run creates some 25 ids)."""
    return "%032x" % (int.from_bytes(os.urandom(16), "big") & _UUID4_KEEP | _UUID4_BITS)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def trusted(cls: type[R], **values: Any) -> R:
        """A record from values the kernel built itself, already of the fields' types (ids,
        clock times, counters, its own payload dicts): not validated, like
        ``model_construct`` at a fraction of its cost. Fields left out take their defaults.
        Anything read from outside (rows, JSON, user input) goes through validation."""
        new = object.__new__(cls)
        template, factories = _template(cls)
        data = dict(template)  # declaration order, as validation gives it
        for name, make in factories.items():
            if name not in values:
                data[name] = make()
        data.update(values)
        _set_attribute(new, "__dict__", data)
        _set_attribute(new, "__pydantic_fields_set__", set(values))
        _set_attribute(new, "__pydantic_extra__", None)
        _set_attribute(new, "__pydantic_private__", None)
        return new

    def evolve(self: R, **changes: Any) -> R:
        """``model_copy(update=changes)`` (a shallow copy, ``changes`` not validated) at half
        its cost: records have no extra or private attributes to copy, and the stores copy a
        record on every write."""
        new = object.__new__(type(self))
        fields_set = self.__pydantic_fields_set__ | changes.keys()
        _set_attribute(new, "__dict__", {**self.__dict__, **changes})
        _set_attribute(new, "__pydantic_fields_set__", fields_set)
        _set_attribute(new, "__pydantic_extra__", None)
        _set_attribute(new, "__pydantic_private__", None)
        return new


#: Per record type: a dict of every field in declaration order (defaults, or ``None`` for a
#: required field, which ``trusted`` callers always give) and the fields with a factory.
_TEMPLATES: dict[type[BaseModel], tuple[dict[str, Any], dict[str, Any]]] = {}


def _template(cls: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    found = _TEMPLATES.get(cls)
    if found is None:
        fields = cls.model_fields
        template = {
            name: None if info.is_required() or info.default_factory else info.default
            for name, info in fields.items()
        }
        factories = {n: i.default_factory for n, i in fields.items() if i.default_factory}
        found = _TEMPLATES[cls] = (template, factories)
    return found


class RunRecord(_Record):
    id: str
    workflow_id: str
    workflow_name: str
    status: Status = Status.PENDING
    input: Any = None
    output: Any = None
    config: dict[str, Any] = Field(default_factory=dict)
    priority: int = 5
    total_cost: float = 0.0
    total_tokens: int = 0
    error_message: str | None = None
    idempotency_key: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    #: Last outbox sequence written for this run (sequences are gap-free per run).
    event_sequence: int = 0
    #: Attempts started per stage id; survives reruns, so attempt numbers keep counting.
    stage_attempts: dict[str, int] = Field(default_factory=dict)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()


class StageRecord(_Record):
    id: str
    workflow_run_id: str
    stage_id: str
    stage_name: str
    stage_number: int
    execution_group: int
    status: Status = Status.PENDING
    attempt: int = 0
    output: Any = None
    #: Blob key when the output was too large to keep in the row.
    output_ref: str | None = None
    config: dict[str, Any] | None = None
    suspended_state: dict[str, Any] | None = None
    resume_state: dict[str, Any] | None = None
    poll_interval: float | None = None
    next_poll_at: datetime | None = None
    max_wait_until: datetime | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    progress: float | None = None
    progress_message: str | None = None
    error_message: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None


class LogRecord(_Record):
    id: str
    workflow_run_id: str
    stage_id: str | None
    level: str
    message: str
    fields: dict[str, Any] = Field(default_factory=dict)
    attempt: int | None = None
    created_at: datetime


class OutboxEvent(_Record):
    id: str
    workflow_run_id: str
    sequence: int
    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    causation_id: str | None = None
    occurred_at: datetime
    published_at: datetime | None = None
    retry_count: int = 0
    dlq_at: datetime | None = None
    last_error: str | None = None


class AnnotationRecord(_Record):
    id: str
    workflow_run_id: str
    stage_id: str | None
    key: str
    value: Any
    actor: Actor
    attempt: int | None = None
    idempotency_key: str | None = None
    created_at: datetime


class IdempotencyRecord(_Record):
    key: str
    command_type: str
    state: Literal["in_progress", "completed"]
    result: Any = None
    created_at: datetime
    expires_at: datetime | None = None


JobStatus = Literal["queued", "running", "completed", "suspended", "failed", "cancelled"]


class Job(_Record):
    job_id: str
    workflow_run_id: str
    workflow_id: str
    stage_id: str
    attempt: int = 1
    max_attempts: int = 3
    priority: int = 5
    payload: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus = "queued"
    available_at: datetime | None = None
    worker_id: str | None = None
    locked_at: datetime | None = None
    last_error: str | None = None
