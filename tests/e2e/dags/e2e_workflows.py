"""The workflow the end-to-end tests run through a real Airflow (see ``e2e_dags.py``).

``intake -> [summarize, classify] -> embed (async batch, deferrable) -> publish``

It lives in an importable module (``tests.e2e.dags.e2e_workflows``; ``.airflowignore`` keeps
the DAG processor from parsing it as a DAG file) because the triggerer imports the workflow by
name to poll ``embed``; the tests put the repository on every Airflow process's PYTHONPATH.

Evidence the tests read back, written to the stage's blob scope (a local directory every
process shares), one file per event so that no two processes race on a counter:

- ``submissions/<uuid>``: one per call of ``embed``'s ``execute`` that submitted a batch;
- ``polls/<uuid>``: one per ``check_completion``, with the process group of the poller (the
  triggerer that ran it);
- with the stage config ``hold=True`` the batch is ready only once the test puts ``release``
  into that scope.

``classify`` has a "bug" the rerun tests fix: it fails (not retryable) while the file
``$AIRFLOW_HOME/broken/<title>`` exists.

``summarize`` and ``classify`` call the deterministic ``mock`` model through ``ctx.ai`` (no
network, no key), so each call leaves a row in the AI cost ledger.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
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
from airflow_workflow_engine.conventions import Decision
from airflow_workflow_engine.errors import NonRetryableStageError

SUMMARY_MODEL = "mock:e2e-summarizer"
CLASSIFY_MODEL = "mock:e2e-classifier"


def _mark(ctx: StageContext[Any, Any], folder: str, **data: Any) -> None:
    """One evidence file per event under ``folder/`` in the stage's blob scope."""
    data.update(pid=os.getpid(), pgid=os.getpgrp(), at=time.time(), attempt=ctx.attempt)
    ctx.blobs.put(f"{folder}/{uuid.uuid4().hex}", json.dumps(data).encode())


# -- models ---------------------------------------------------------------------------------


class DocInput(BaseModel):
    """One document to process (the DAG run's conf)."""

    title: str = Field(description="Document title")
    text: str = Field(min_length=1, description="Document body")
    language: str = Field("en", description="ISO language code")


class Extracted(BaseModel):
    title: str
    words: list[str]
    word_count: int


class Summary(BaseModel):
    summary: str


class Classification(BaseModel):
    category: str
    hits: int


class Analysis(BaseModel):
    summarize: Summary
    classify: Classification


class Embedded(BaseModel):
    vectors: list[int]
    batch_id: str


class Publication(BaseModel):
    title: str
    summary: str
    category: str
    dimensions: int
    batch_id: str


class EmbedConfig(BaseModel):
    #: Polls answering "not ready" before the simulated batch is done (when not holding).
    polls_needed: int = Field(2, ge=1)
    poll_interval: float = Field(1.0, gt=0)
    #: Wait for the test to put ``release`` into the stage's blob scope.
    hold: bool = False


# -- stages ---------------------------------------------------------------------------------


def _intake(ctx: StageContext[DocInput, Any]) -> Extracted:
    words = ctx.input.text.split()
    # Evidence that this ran in a real task process, where Airflow hides its own database.
    from airflow import settings

    ctx.annotate("e2e.airflow_sql_alchemy_conn", str(settings.SQL_ALCHEMY_CONN))
    ctx.annotate("e2e.language", ctx.input.language)
    return Extracted(title=ctx.input.title, words=words, word_count=len(words))


def _summarize(ctx: StageContext[Extracted, Any]) -> Summary:
    head = " ".join(ctx.input.words[:6])
    result = ctx.ai.generate_text(SUMMARY_MODEL, head, system="Summarize.", max_tokens=16)
    return Summary(summary=result.text)


_CATEGORIES = {
    "engineering": ("airflow", "pipeline", "deploy", "code", "scheduler"),
    "finance": ("revenue", "cost", "budget", "profit"),
}


def _classify(ctx: StageContext[Extracted, Any]) -> Classification:
    if (Path(os.environ.get("AIRFLOW_HOME", ".")) / "broken" / ctx.input.title).exists():
        raise NonRetryableStageError(f"classify is broken for {ctx.input.title!r}")
    lowered = [w.lower().strip(".,") for w in ctx.input.words]
    scores = {c: sum(lowered.count(w) for w in words) for c, words in _CATEGORIES.items()}
    category, hits = max(scores.items(), key=lambda kv: kv[1])
    category = category if hits else "general"
    ctx.annotate(Decision.outcome, category)
    why = ctx.ai.generate_text(CLASSIFY_MODEL, f"why {category}?", max_tokens=8)
    ctx.annotate(Decision.rationale, why.text)
    return Classification(category=category, hits=hits)


def _embed(ctx: StageContext[Analysis, EmbedConfig]) -> Suspended:
    # Submitting the (simulated) batch job: must happen exactly once per stage.
    _mark(ctx, "submissions")
    texts = [ctx.input.summarize.summary, ctx.input.classify.category]
    return Suspended(
        state={"batch_id": f"batch-{ctx.workflow_run_id[:8]}", "texts": texts},
        poll_interval=ctx.config.poll_interval,
        max_wait=900,
    )


def _embed_check(state: dict[str, Any], ctx: StageContext[Analysis, EmbedConfig]) -> Any:
    _mark(ctx, "polls")
    if ctx.config.hold:
        ready = ctx.blobs.has("release")
    else:
        ready = len(ctx.blobs.list("polls/")) >= ctx.config.polls_needed
    if not ready:
        return CompletionCheck(ready=False)
    vectors = [len(t) for t in state["texts"]]
    return CompletionCheck(ready=True, output={"vectors": vectors, "batch_id": state["batch_id"]})


def _publish(ctx: StageContext[Embedded, Any]) -> Publication:
    intake = ctx.require("intake")
    analysis = ctx.require("summarize"), ctx.require("classify")
    ctx.annotate("e2e.published", True)
    return Publication(
        title=intake.title,
        summary=analysis[0].summary,
        category=analysis[1].category,
        dimensions=len(ctx.input.vectors),
        batch_id=ctx.input.batch_id,
    )


intake = define_stage(id="intake", input=DocInput, output=Extracted, execute=_intake)
summarize = define_stage(id="summarize", input=Extracted, output=Summary, execute=_summarize)
classify = define_stage(id="classify", input=Extracted, output=Classification, execute=_classify)
embed = define_async_batch_stage(
    id="embed",
    input=Analysis,
    output=Embedded,
    config=EmbedConfig,
    execute=_embed,
    check_completion=_embed_check,
)
publish = define_stage(
    id="publish",
    input=Embedded,
    output=Publication,
    execute=_publish,
    dependencies=["intake", "summarize", "classify"],
)

documents = (
    WorkflowBuilder(
        "e2e-documents",
        "End-to-end documents",
        "Extracts a document, summarizes and classifies it in parallel, embeds it in a "
        "(simulated) batch job and publishes the result.",
        input=DocInput,
        output=Publication,
    )
    .pipe(intake)
    .parallel([summarize, classify])
    .pipe(embed)
    .pipe(publish)
    .build()
)
