"""A DAG with two workflows as task groups among plain tasks:

``start >> [docs, tally] >> end``, where ``docs`` runs the importable ``e2e-documents``
workflow (``e2e_workflows.py``) and ``tally`` a small workflow defined here, in the DAG file,
with a deferrable batch stage (the triggerer finds it by loading this file). Each group has
its own workflow run per DAG run, keyed ``e2e_groups/<run_id>/<group_id>``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from pydantic import BaseModel

from airflow_workflow_engine import (
    CompletionCheck,
    StageContext,
    Suspended,
    WorkflowBuilder,
    define_async_batch_stage,
    define_stage,
)
from airflow_workflow_engine.task_group import WorkflowTaskGroup
from tests.e2e.dags import e2e_workflows as wf


class TallyInput(BaseModel):
    title: str
    text: str


class Counted(BaseModel):
    words: int


class Tally(BaseModel):
    words: int
    batch_id: str


def _count(ctx: StageContext[TallyInput, Any]) -> Counted:
    return Counted(words=len(ctx.input.text.split()))


def _submit(ctx: StageContext[Counted, Any]) -> Suspended:
    ctx.blobs.put(f"submissions/{uuid.uuid4().hex}", json.dumps({"at": ctx.attempt}).encode())
    return Suspended(state={"batch_id": f"tally-{ctx.attempt}"}, poll_interval=1.0, max_wait=600)


def _check(state: dict[str, Any], ctx: StageContext[Counted, Any]) -> CompletionCheck:
    return CompletionCheck(
        ready=True, output={"words": ctx.input.words, "batch_id": state["batch_id"]}
    )


count = define_stage(id="count", input=TallyInput, output=Counted, execute=_count)
score = define_async_batch_stage(
    id="score", input=Counted, output=Tally, execute=_submit, check_completion=_check
)
tally = (
    WorkflowBuilder("e2e-tally", "Tally", input=TallyInput, output=Tally)
    .pipe(count)
    .pipe(score)
    .build()
)

with DAG("e2e_groups", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
    start = EmptyOperator(task_id="start")
    docs = WorkflowTaskGroup(
        workflow=wf.documents,
        group_id="docs",
        config={"embed": {"polls_needed": 2, "poll_interval": 1.0}},
    )
    tallied = WorkflowTaskGroup(workflow=tally, group_id="tally")
    end = EmptyOperator(task_id="end")
    start >> [docs, tallied] >> end
