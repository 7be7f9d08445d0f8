"""The document pipeline: extract -> [summarize, classify] -> embed (AI batch) -> publish.

Runs offline: ``summarize`` and ``classify`` call models through ``ctx.ai``, and ``embed``
sends its requests as one provider batch (``define_ai_batch_stage``), all with the
deterministic ``mock`` provider (every call is priced and recorded in the AI cost ledger), so
the demo needs no API key. Point a stage at a real model with its config, e.g.
``{"summarize": {"model": "openai:gpt-5-mini"}}`` or ``{"embed": {"model":
"openai:gpt-5-mini"}}`` (a real batch takes minutes to hours; the task waits in the triggerer).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from airflow_workflow_engine import (
    StageContext,
    StageResult,
    WorkflowBuilder,
    define_stage,
    with_ai_config,
)
from airflow_workflow_engine.ai.batch_stage import define_ai_batch_stage
from airflow_workflow_engine.ai.providers.base import BatchRequest
from airflow_workflow_engine.ai.results import BatchItem
from airflow_workflow_engine.conventions import Decision

#: Illustrative prices (USD per million tokens) for the example's mock models: mock calls are
#: free unless a price is registered, and a cost table of zeros would show nothing.
DEMO_PRICES = {
    "mock:summarizer": (0.25, 2.0),
    "mock:classifier": (0.10, 0.40),
    "mock:embedder": (0.05, 0.20),
}


def register_demo_prices() -> None:
    """Registers :data:`DEMO_PRICES` in this process. This module calls it on import, so every
    process that runs the stages prices the mock calls the same way: Airflow's task
    processes, and the triggerer that collects ``embed``'s batch."""
    from airflow_workflow_engine.ai.prices import register_model

    for key, (input_price, output_price) in DEMO_PRICES.items():
        register_model(key, input_per_mtok=input_price, output_per_mtok=output_price)


register_demo_prices()


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
    #: Search keywords the model wrote for each text (what the vectors are made from).
    keywords: list[str]


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


class _EmbedOptions(BaseModel):
    model: str = Field("mock:embedder", description="Model key that answers the batch")
    dimensions: int = Field(8, ge=1, le=64, description="Length of each vector")


EmbedConfig = with_ai_config(_EmbedOptions)


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


def _embed_requests(ctx: StageContext[Analysis, Any]) -> list[BatchRequest]:
    # Deterministic for a given input: the batch's idempotency key is built from these, so a
    # retry or a crashed worker re-attaches to the batch already submitted.
    texts = {"summary": ctx.input.summarize.summary, "category": ctx.input.classify.category}
    return [
        BatchRequest(id=key, prompt=f"Five search keywords for: {text}", max_tokens=12)
        for key, text in texts.items()
    ]


def _embed_collect(items: list[BatchItem], ctx: StageContext[Analysis, Any]) -> Embeddings:
    keywords = [item.text or "" for item in items]
    vectors = [_vector(k, ctx.config.dimensions) for k in keywords]
    ctx.progress(1.0, f"{len(vectors)} vectors")
    return Embeddings(vectors=vectors, keywords=keywords)


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
embed = define_ai_batch_stage(
    id="embed",
    name="Embed (AI batch)",
    input=Analysis,
    output=Embeddings,
    config=EmbedConfig,
    build_requests=_embed_requests,
    collect=_embed_collect,
    poll_interval=1.0,
    max_wait=6 * 3600,
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
