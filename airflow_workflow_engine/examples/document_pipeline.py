"""The document pipeline: extract -> [summarize, classify] -> embed (async batch) -> publish.

Runs offline: ``summarize`` and ``classify`` call models through ``ctx.ai`` with the
deterministic ``mock`` provider (every call is priced and recorded in the AI cost ledger), so
the demo needs no API key. Point a stage at a real model with its config, e.g.
``{"summarize": {"model": "openai:gpt-5-mini"}}``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from airflow_workflow_engine import (
    CompletionCheck,
    StageContext,
    StageResult,
    Suspended,
    WorkflowBuilder,
    define_async_batch_stage,
    define_stage,
    with_ai_config,
)
from airflow_workflow_engine.conventions import Decision


class DocumentInput(BaseModel):
    """What a run of the pipeline is asked to process (the DAG run's conf)."""

    title: str = Field(description="Document title")
    text: str = Field(min_length=1, description="Document body")
    language: str = Field("en", description="ISO language code")


class ExtractedText(BaseModel):
    title: str
    text: str
    word_count: int


class Summary(BaseModel):
    summary: str


class Classification(BaseModel):
    category: str
    confidence: float


class Analysis(BaseModel):
    summarize: Summary
    classify: Classification


class Embeddings(BaseModel):
    vectors: list[list[float]]
    batch_id: str


class Publication(BaseModel):
    title: str
    summary: str
    category: str
    dimensions: int


class _SummarizeOptions(BaseModel):
    model: str = Field("mock:summarizer", description="Model key of the summarizer")
    max_words: int = Field(12, ge=1, description="Longest summary, in words")


class _ClassifyOptions(BaseModel):
    model: str = Field("mock:classifier", description="Model key that explains the category")
    rationale_words: int = Field(16, ge=1, description="Longest rationale, in words")


#: ``model``, ``max_words`` and the AI presets (``temperature``, ``max_tokens``, ``max_cost``).
SummarizeConfig = with_ai_config(_SummarizeOptions)
ClassifyConfig = with_ai_config(_ClassifyOptions)


class EmbedConfig(BaseModel):
    dimensions: int = Field(8, ge=1, le=64)
    polls_needed: int = Field(2, ge=1, description="Polls before the (simulated) batch is done")
    poll_interval: float = Field(1.0, gt=0)


def _extract(ctx: StageContext[DocumentInput, Any]) -> ExtractedText:
    text = " ".join(ctx.input.text.split())
    ctx.log("INFO", "extracted text", characters=len(text))
    return ExtractedText(title=ctx.input.title, text=text, word_count=len(text.split()))


def _summarize(ctx: StageContext[ExtractedText, Any]) -> Summary:
    result = ctx.ai.generate_text(
        ctx.config.model,
        ctx.input.text,
        system=f"Summarize the document in at most {ctx.config.max_words} words.",
        max_tokens=ctx.config.max_words,
    )
    ctx.progress(1.0, "summarized")
    return Summary(summary=result.text)


_CATEGORIES = {
    "finance": ("revenue", "cost", "budget", "profit"),
    "engineering": ("airflow", "pipeline", "deploy", "code"),
}


def _classify(ctx: StageContext[ExtractedText, Any]) -> StageResult[Classification]:
    lowered = ctx.input.text.lower()
    scores = {c: sum(lowered.count(w) for w in words) for c, words in _CATEGORIES.items()}
    category, hits = max(scores.items(), key=lambda kv: kv[1])
    category = category if hits else "general"
    confidence = min(0.5 + 0.1 * hits, 0.99)
    # The keyword rules decide; a model writes down why (kept as provenance).
    rationale = ctx.ai.generate_text(
        ctx.config.model,
        f"In one sentence, why is this document about {category}? {ctx.input.text}",
        max_tokens=ctx.config.rationale_words,
    )
    ctx.annotate(Decision.outcome, category)
    ctx.annotate(Decision.confidence, confidence)
    ctx.annotate(Decision.rationale, rationale.text)
    return StageResult(
        output=Classification(category=category, confidence=confidence),
        custom_metrics={"keyword_hits": hits},
    )


def _vector(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255, 4) for b in digest[:dims]]


def _embed_submit(ctx: StageContext[Analysis, EmbedConfig]) -> Suspended | Embeddings:
    if ctx.resume_state is not None:
        return Embeddings(vectors=ctx.resume_state["vectors"], batch_id=ctx.resume_state["id"])
    texts = [ctx.input.summarize.summary, ctx.input.classify.category]
    batch_id = "batch-" + hashlib.sha1(ctx.workflow_run_id.encode()).hexdigest()[:8]
    ctx.log("INFO", "submitted embedding batch", batch_id=batch_id, requests=len(texts))
    return Suspended(
        state={"id": batch_id, "texts": texts},
        poll_interval=ctx.config.poll_interval,
        max_wait=3600,
    )


def _embed_check(
    state: dict[str, Any], ctx: StageContext[Analysis, EmbedConfig]
) -> CompletionCheck:
    # A real stage asks the provider whether the batch is done. This simulated batch is done
    # after `polls_needed` polls, counted in the stage's blob scope (state is read-only here).
    polls = int(ctx.blobs.get("polls")) + 1 if ctx.blobs.has("polls") else 1
    ctx.blobs.put("polls", str(polls).encode())
    if polls < ctx.config.polls_needed:
        return CompletionCheck(ready=False)
    vectors = [_vector(t, ctx.config.dimensions) for t in state["texts"]]
    return CompletionCheck(ready=True, output={"vectors": vectors, "batch_id": state["id"]})


def _publish(ctx: StageContext[Embeddings, Any]) -> Publication:
    extracted = ctx.require("extract")
    analysis_summary = ctx.require("summarize")
    classification = ctx.require("classify")
    return Publication(
        title=extracted.title,
        summary=analysis_summary.summary,
        category=classification.category,
        dimensions=len(ctx.input.vectors[0]) if ctx.input.vectors else 0,
    )


extract = define_stage(
    id="extract", name="Extract text", input=DocumentInput, output=ExtractedText, execute=_extract
)
summarize = define_stage(
    id="summarize",
    name="Summarize",
    input=ExtractedText,
    output=Summary,
    config=SummarizeConfig,
    execute=_summarize,
)
classify = define_stage(
    id="classify",
    name="Classify",
    input=ExtractedText,
    output=Classification,
    config=ClassifyConfig,
    execute=_classify,
)
embed = define_async_batch_stage(
    id="embed",
    name="Embed (batch)",
    input=Analysis,
    output=Embeddings,
    config=EmbedConfig,
    execute=_embed_submit,
    check_completion=_embed_check,
)
publish = define_stage(
    id="publish",
    name="Publish",
    input=Embeddings,
    output=Publication,
    execute=_publish,
    dependencies=["extract", "summarize", "classify"],
)

document_pipeline = (
    WorkflowBuilder(
        "document-pipeline",
        "Document pipeline",
        "Extracts a document, summarizes and classifies it in parallel, embeds the results in a "
        "batch job and publishes them.",
        input=DocumentInput,
        output=Publication,
    )
    .pipe(extract)
    .parallel([summarize, classify])
    .pipe(embed)
    .pipe(publish)
    .build()
)

EXAMPLE_INPUT = {
    "title": "Quarterly pipeline report",
    "text": "Our Airflow pipeline now deploys code twice a day. Revenue from the new data "
    "products covered the budget, and the cost of model calls fell after batching.",
}
