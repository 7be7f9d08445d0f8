"""The one table of legal transitions, and that illegal ones raise."""

from __future__ import annotations

import pytest

from airflow_workflow_engine.errors import InvalidTransitionError
from airflow_workflow_engine.kernel.status import (
    RUN_TRANSITIONS,
    STAGE_TRANSITIONS,
    Status,
    check_run_transition,
    check_stage_transition,
)

ALL = list(Status)


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("target", ALL)
def test_run_table_is_enforced(current: Status, target: Status) -> None:
    if target in RUN_TRANSITIONS[current]:
        check_run_transition(current, target)
    else:
        with pytest.raises(InvalidTransitionError, match=f"run transition {current} -> {target}"):
            check_run_transition(current, target)


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("target", ALL)
def test_stage_table_is_enforced(current: Status, target: Status) -> None:
    if target in STAGE_TRANSITIONS[current]:
        check_stage_transition(current, target)
    else:
        with pytest.raises(InvalidTransitionError, match=f"stage transition {current} -> {target}"):
            check_stage_transition(current, target)


def test_terminal_stages_never_move() -> None:
    for status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.SKIPPED):
        assert STAGE_TRANSITIONS[status] == frozenset()
        assert status.is_terminal


def test_completed_run_cannot_be_cancelled() -> None:
    with pytest.raises(InvalidTransitionError):
        check_run_transition(Status.COMPLETED, Status.CANCELLED)
