"""Small helpers for kernel tests."""

from __future__ import annotations

from typing import Any

from airflow_workflow_engine.kernel.commands import RunCreate
from airflow_workflow_engine.testing.kit import TestKit
from tests.workflows import DOC_INPUT


def create(kit: TestKit, workflow_id: str = "doc", **fields: Any) -> str:
    fields.setdefault("input", DOC_INPUT)
    result = kit.kernel.dispatch(RunCreate(workflow_id=workflow_id, **fields))
    return str(result.workflow_run_id)
