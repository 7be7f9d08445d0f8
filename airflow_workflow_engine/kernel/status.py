"""Statuses and the one table of legal transitions for runs and stages."""

from __future__ import annotations

from enum import Enum

from airflow_workflow_engine.errors import InvalidTransitionError

__all__ = [
    "RUN_TRANSITIONS",
    "STAGE_TRANSITIONS",
    "TERMINAL",
    "Status",
    "check_run_transition",
    "check_stage_transition",
]


class Status(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.SKIPPED})

S = Status

#: Workflow runs. A terminal run goes back to RUNNING only through ``run.rerunFrom`` or
#: ``run.rerunStages``.
RUN_TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.SUSPENDED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.SUSPENDED: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset({S.RUNNING}),
    S.FAILED: frozenset({S.RUNNING}),
    S.CANCELLED: frozenset({S.RUNNING}),
    S.SKIPPED: frozenset(),
}

#: Stages. RUNNING -> PENDING is a retry being scheduled; SUSPENDED -> PENDING is a resumed
#: batch stage whose ``execute`` runs again with ``resume_state``.
STAGE_TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED, S.SKIPPED, S.FAILED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.SUSPENDED, S.CANCELLED, S.PENDING}),
    S.SUSPENDED: frozenset({S.COMPLETED, S.PENDING, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
}


def check_run_transition(current: Status, target: Status, detail: str = "") -> None:
    if target not in RUN_TRANSITIONS[current]:
        raise InvalidTransitionError("run", current.value, target.value, detail)


def check_stage_transition(current: Status, target: Status, detail: str = "") -> None:
    if target not in STAGE_TRANSITIONS[current]:
        raise InvalidTransitionError("stage", current.value, target.value, detail)
