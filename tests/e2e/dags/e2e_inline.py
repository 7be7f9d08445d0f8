"""A DAG file that defines its own workflow, the way a user first writes one.

Everything is inline: the models, a sync stage, a parallel group, an async-batch stage and
``workflow.to_dag()``. Nothing here is importable by the triggerer under a module name
(Airflow loads DAG files as ``unusual_prefix_...``), so the triggerer finds the workflow by
loading this file from its DAG bundle.

The simulated batch is ready at its second poll; each submission and poll leaves a marker in
the stage's blob scope (``submissions/``, ``polls/``) for the test to count.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, Field

from airflow_workflow_engine import (
    CompletionCheck,
    StageContext,
    Suspended,
    WorkflowBuilder,
    define_async_batch_stage,
    define_stage,
)


class Note(BaseModel):
    title: str = Field(description="Note title")
    text: str = Field(min_length=1, description="Note body")


class Words(BaseModel):
    words: list[str]


class Upper(BaseModel):
    upper: str


class Count(BaseModel):
    count: int


class Both(BaseModel):
    shout: Upper
    count: Count


class Scored(BaseModel):
    score: int
    batch_id: str


def _mark(ctx: StageContext[Any, Any], folder: str) -> None:
    ctx.blobs.put(f"{folder}/{uuid.uuid4().hex}", json.dumps({"attempt": ctx.attempt}).encode())


def _split(ctx: StageContext[Note, Any]) -> Words:
    return Words(words=ctx.input.text.split())


def _shout(ctx: StageContext[Words, Any]) -> Upper:
    return Upper(upper=" ".join(ctx.input.words).upper())


def _count(ctx: StageContext[Words, Any]) -> Count:
    return Count(count=len(ctx.input.words))


def _submit(ctx: StageContext[Both, Any]) -> Suspended:
    _mark(ctx, "submissions")
    return Suspended(
        state={"batch_id": f"inline-{ctx.workflow_run_id[:8]}-{ctx.attempt}"},
        poll_interval=1.0,
        max_wait=600,
    )


def _check(state: dict[str, Any], ctx: StageContext[Both, Any]) -> CompletionCheck:
    _mark(ctx, "polls")
    polls = len([k for k in ctx.blobs.list("polls/")])
    if polls % 2:
        return CompletionCheck(ready=False)
    score = ctx.input.count.count * 10 + len(ctx.input.shout.upper)
    return CompletionCheck(ready=True, output={"score": score, "batch_id": state["batch_id"]})


split = define_stage(id="split", input=Note, output=Words, execute=_split)
shout = define_stage(id="shout", input=Words, output=Upper, execute=_shout)
count = define_stage(id="count", input=Words, output=Count, execute=_count)
score = define_async_batch_stage(
    id="score", input=Both, output=Scored, execute=_submit, check_completion=_check
)

inline_workflow = (
    WorkflowBuilder(
        "e2e-inline",
        "Inline workflow",
        "A workflow defined in its DAG file, with a parallel group and a batch stage.",
        input=Note,
        output=Scored,
    )
    .pipe(split)
    .parallel([shout, count])
    .pipe(score)
    .build()
)

inline_dag = inline_workflow.to_dag(dag_id="e2e_inline")
