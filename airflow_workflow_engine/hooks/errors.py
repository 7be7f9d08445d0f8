"""How engine errors fail an Airflow task: shared by the operators and the sensors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException

from airflow_workflow_engine.errors import WorkflowEngineError

__all__ = ["engine_errors"]


@contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Non-retryable engine errors fail the task without retries; others propagate."""
    try:
        yield
    except WorkflowEngineError as exc:
        if getattr(exc, "retryable", True):
            raise
        raise AirflowFailException(f"{what}: {exc}") from exc
