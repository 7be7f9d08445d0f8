"""A hand-wired DAG: stage operators mixed with a plain ``@task``; the workflow is derived."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from airflow_workflow_engine.operators.stage import StageOperator
from tests.integration.airflow import workflows as wf

with DAG("it_hand", schedule=None, tags=["workflow-engine"]) as dag:
    measure = StageOperator(stage=wf.measure)

    @task
    def note(summary: dict[str, Any]) -> str:
        # A plain task in between reads the stage's XCom summary.
        return f"measure is {summary['status']}"

    report = StageOperator(stage=wf.report)
    measure >> note(measure.output) >> report  # type: ignore[arg-type]
