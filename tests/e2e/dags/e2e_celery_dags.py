"""The DAGs of the CeleryExecutor suite (``test_e2e_celery.py``).

``e2e_celery_documents``: the end-to-end documents workflow (``e2e_workflows.py``) with an AI
batch stage: ``intake -> [summarize, classify] -> embed -> publish``, where ``embed`` sends
two requests as one batch through the real openai SDK to the fake LLM server's batch API
(``llm_openai_default``); the task defers, the triggerer polls the batch, and the task
resumes on a worker to store the output.

``e2e_celery_slow``: the kill test's DAG.

``ask -> [slow_a, slow_b] -> publish``: every stage asks the fake LLM server (the OpenAI API
at ``llm_openai_default``'s host) once through ``ctx.ai``, so each answered call leaves one
ledger row; ``slow_a`` and ``slow_b`` then take ``E2E_SLOW_SECONDS`` (default 6), long enough
for the test to SIGKILL the worker running one of them. Tasks retry (``retries=2``) on the
other worker.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine import StageContext, WorkflowBuilder, define_stage
from airflow_workflow_engine.ai.batch_stage import define_ai_batch_stage
from airflow_workflow_engine.ai.providers.base import BatchRequest
from airflow_workflow_engine.ai.results import BatchItem
from airflow_workflow_engine.dag import build_dag
from tests.e2e.dags import e2e_workflows as wf

MODEL = "openai:gpt-4o-mini"


class Doc(BaseModel):
    text: str


class Said(BaseModel):
    text: str


class Both(BaseModel):
    slow_a: Said
    slow_b: Said


def _ask(ctx: StageContext[Doc, Any]) -> Said:
    return Said(text=ctx.ai.generate_text(MODEL, f"ask: {ctx.input.text}"[:200]).text)


def _slow(ctx: StageContext[Said, Any]) -> Said:
    said = ctx.ai.generate_text(MODEL, f"{ctx.stage_id}: {ctx.input.text}"[:200]).text
    time.sleep(float(os.environ.get("E2E_SLOW_SECONDS", "6")))
    return Said(text=said)


def _publish(ctx: StageContext[Both, Any]) -> Said:
    joined = f"{ctx.input.slow_a.text} | {ctx.input.slow_b.text}"
    return Said(text=ctx.ai.generate_text(MODEL, f"publish: {joined}"[:200]).text)


slow = (
    WorkflowBuilder("e2e-celery-slow", "Celery kill test", input=Doc, output=Said)
    .pipe(define_stage(id="ask", input=Doc, output=Said, execute=_ask))
    .parallel(
        [
            define_stage(id="slow_a", input=Said, output=Said, execute=_slow),
            define_stage(id="slow_b", input=Said, output=Said, execute=_slow),
        ]
    )
    .pipe(define_stage(id="publish", input=Both, output=Said, execute=_publish))
    .build()
)

slow_dag = build_dag(
    slow,
    dag_id="e2e_celery_slow",
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
)


def _embed_requests(ctx: StageContext[wf.Analysis, Any]) -> list[BatchRequest]:
    analysis = ctx.input
    return [
        BatchRequest(id="summary", prompt=f"embed: {analysis.summarize.summary}"[:200]),
        BatchRequest(id="category", prompt=f"embed: {analysis.classify.category}"),
    ]


def _embed_collect(items: list[BatchItem], ctx: StageContext[wf.Analysis, Any]) -> wf.Embedded:
    return wf.Embedded(
        vectors=[len(item.text or "") for item in items], batch_id=f"ai-{ctx.workflow_run_id[:8]}"
    )


ai_embed = define_ai_batch_stage(
    id="embed",
    input=wf.Analysis,
    output=wf.Embedded,
    model=MODEL,
    build_requests=_embed_requests,
    collect=_embed_collect,
    poll_interval=1.0,
    max_wait=900,
)

documents = (
    WorkflowBuilder(
        "e2e-celery-documents",
        "Celery documents",
        input=wf.DocInput,
        output=wf.Publication,
    )
    .pipe(wf.intake)
    .parallel([wf.summarize, wf.classify])
    .pipe(ai_embed)
    .pipe(wf.publish)
    .build()
)

documents_dag = build_dag(documents, dag_id="e2e_celery_documents")
