"""Workflows the kernel tests share. Stage bodies call ``HOOKS`` so tests can reach in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from airflow_workflow_engine import (
    CompletionCheck,
    NonRetryableStageError,
    StageContext,
    StageResult,
    Suspended,
    WorkflowBuilder,
    define_async_batch_stage,
    define_stage,
)
from airflow_workflow_engine.conventions import Decision

#: Bodies executed, by stage id (reset per test by the autouse fixture in conftest).
CALLS: Counter[str] = Counter()
#: Optional callbacks run inside stage bodies, by stage id: ``hook(ctx)``.
HOOKS: dict[str, Callable[[StageContext[Any, Any]], None]] = {}


def _enter(ctx: StageContext[Any, Any]) -> None:
    CALLS[ctx.stage_id] += 1
    hook = HOOKS.get(ctx.stage_id)
    if hook is not None:
        hook(ctx)


# -- the 4-group document workflow ------------------------------------------------------------


class DocInput(BaseModel):
    title: str
    body: str = Field(min_length=1)


class Text(BaseModel):
    title: str
    text: str
    words: int


class Summary(BaseModel):
    summary: str


class Label(BaseModel):
    label: str
    confidence: float


class Combined(BaseModel):
    headline: str


class Published(BaseModel):
    url: str
    headline: str


class SummarizeConfig(BaseModel):
    max_words: int = Field(5, ge=1)


class ParallelInput(BaseModel):
    summarize: Summary
    classify: Label


def _extract(ctx: StageContext[DocInput, Any]) -> Text:
    _enter(ctx)
    ctx.log("INFO", "extracting", title=ctx.input.title)
    ctx.progress(0.5, "half way")
    return Text(title=ctx.input.title, text=ctx.input.body, words=len(ctx.input.body.split()))


async def _summarize(ctx: StageContext[Text, SummarizeConfig]) -> dict[str, Any]:
    _enter(ctx)
    words = ctx.input.text.split()[: ctx.config.max_words]
    return {"summary": " ".join(words)}


def _classify(ctx: StageContext[Text, Any]) -> StageResult[Label]:
    _enter(ctx)
    label = "long" if ctx.input.words > 5 else "short"
    ctx.annotate(Decision.outcome, label)
    ctx.annotate(
        actor={"kind": "agent", "id": "classifier-v1"}, attributes={"decision.confidence": 0.9}
    )
    return StageResult(output=Label(label=label, confidence=0.9), custom_metrics={"rules": 1})


def _combine(ctx: StageContext[ParallelInput, Any]) -> Combined:
    _enter(ctx)
    extracted = ctx.require("extract")
    return Combined(
        headline=f"{extracted.title}: {ctx.input.summarize.summary} ({ctx.input.classify.label})"
    )


def _publish(ctx: StageContext[Combined, Any]) -> Published:
    _enter(ctx)
    return Published(
        url=f"https://example.invalid/{ctx.workflow_run_id}", headline=ctx.input.headline
    )


extract = define_stage(id="extract", name="Extract", input=DocInput, output=Text, execute=_extract)
summarize = define_stage(
    id="summarize", input=Text, output=Summary, config=SummarizeConfig, execute=_summarize
)
classify = define_stage(id="classify", input=Text, output=Label, execute=_classify)
combine = define_stage(
    id="combine",
    input=ParallelInput,
    output=Combined,
    execute=_combine,
    dependencies=["extract", "summarize", "classify"],
)
publish = define_stage(id="publish", input=Combined, output=Published, execute=_publish)

DOC_WORKFLOW = (
    WorkflowBuilder(
        "doc", "Document", "Extract, analyse, publish", input=DocInput, output=Published
    )
    .pipe(extract)
    .parallel([summarize, classify])
    .pipe(combine)
    .pipe(publish)
    .build()
)

# -- async-batch workflows --------------------------------------------------------------------


class BatchConfig(BaseModel):
    polls_needed: int = 3
    poll_interval: float = 30.0
    max_wait: float | None = 3600.0
    resume: bool = False


class BatchOutput(BaseModel):
    items: list[str]


def _submit(ctx: StageContext[DocInput, BatchConfig]) -> Suspended | BatchOutput:
    _enter(ctx)
    if ctx.resume_state is not None:
        return BatchOutput(items=[f"resumed:{ctx.resume_state['batch_id']}"])
    return Suspended(
        state={"batch_id": f"b-{ctx.workflow_run_id[:6]}", "polls": 0},
        poll_interval=ctx.config.poll_interval,
        max_wait=ctx.config.max_wait,
    )


POLLS: Counter[str] = Counter()


def _check(state: dict[str, Any], ctx: StageContext[DocInput, BatchConfig]) -> CompletionCheck:
    POLLS[ctx.workflow_run_id] += 1
    hook = HOOKS.get("check")
    if hook is not None:
        hook(ctx)
    if POLLS[ctx.workflow_run_id] < ctx.config.polls_needed:
        return CompletionCheck(ready=False)
    if ctx.config.resume:
        return CompletionCheck(ready=True)
    return CompletionCheck(ready=True, output={"items": [state["batch_id"], ctx.input.title]})


batch = define_async_batch_stage(
    id="batch",
    input=DocInput,
    output=BatchOutput,
    config=BatchConfig,
    execute=_submit,
    check_completion=_check,
)
BATCH_WORKFLOW = (
    WorkflowBuilder("batch", "Batch", None, input=DocInput, output=BatchOutput).pipe(batch).build()
)

# -- failure modes ----------------------------------------------------------------------------


class FlakyConfig(BaseModel):
    fail_times: int = 1
    non_retryable: bool = False


class Done(BaseModel):
    ok: bool


def _flaky(ctx: StageContext[Any, FlakyConfig]) -> Done:
    _enter(ctx)
    ctx.annotate("attempt.seen", ctx.attempt)
    if ctx.config.non_retryable:
        raise NonRetryableStageError("bad document: cannot be processed")
    if CALLS[ctx.stage_id] <= ctx.config.fail_times:
        raise RuntimeError(f"transient failure #{CALLS[ctx.stage_id]}")
    return Done(ok=True)


flaky = define_stage(id="flaky", output=Done, config=FlakyConfig, execute=_flaky)
FLAKY_WORKFLOW = (
    WorkflowBuilder("flaky", "Flaky", None, input=DocInput, output=Done).pipe(flaky).build()
)


def _wrong(ctx: StageContext[Any, Any]) -> dict[str, Any]:
    _enter(ctx)
    return {"ok": "not-a-bool"}


wrong = define_stage(id="wrong", output=Done, execute=_wrong)
WRONG_OUTPUT_WORKFLOW = (
    WorkflowBuilder("wrong-output", "Wrong", None, input=DocInput, output=Done).pipe(wrong).build()
)


class Other(BaseModel):
    something_else: int


def _fine(ctx: StageContext[Any, Any]) -> Done:
    _enter(ctx)
    return Done(ok=True)


fine = define_stage(id="fine", output=Done, execute=_fine)
BAD_WORKFLOW_OUTPUT = (
    WorkflowBuilder("bad-wf-output", "Bad", None, input=DocInput, output=Other).pipe(fine).build()
)


class Big(BaseModel):
    blob: str


def _big(ctx: StageContext[Any, Any]) -> Big:
    _enter(ctx)
    ctx.blobs.put("artifact.txt", b"side artifact")
    return Big(blob="x" * 300_000)


def _after_big(ctx: StageContext[Big, Any]) -> Done:
    _enter(ctx)
    return Done(ok=len(ctx.input.blob) == 300_000)


big = define_stage(id="big", output=Big, execute=_big)
after_big = define_stage(id="after-big", input=Big, output=Done, execute=_after_big)
BIG_WORKFLOW = (
    WorkflowBuilder("big", "Big", None, input=DocInput, output=Done)
    .pipe(big)
    .pipe(after_big)
    .build()
)

ALL_WORKFLOWS = [
    DOC_WORKFLOW,
    BATCH_WORKFLOW,
    FLAKY_WORKFLOW,
    WRONG_OUTPUT_WORKFLOW,
    BAD_WORKFLOW_OUTPUT,
    BIG_WORKFLOW,
]

DOC_INPUT = {"title": "Report", "body": "one two three four five six seven"}
