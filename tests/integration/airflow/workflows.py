"""Workflows the Airflow integration tests run.

They live in an importable module (``tests.integration.airflow.workflows``) because workers
and the triggerer import them by name: the tests put the repository on their PYTHONPATH.
Counters that must survive process boundaries (submissions, polls) are kept in the stage's
blob scope, which every process shares.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from airflow_workflow_engine import (
    CompletionCheck,
    NonRetryableStageError,
    StageContext,
    Suspended,
    WorkflowBuilder,
    define_async_batch_stage,
    define_stage,
)


def _bump(ctx: StageContext[Any, Any], name: str) -> int:
    """Increments a counter in the stage's blob scope; returns the new value."""
    count = int(ctx.blobs.get(name)) + 1 if ctx.blobs.has(name) else 1
    ctx.blobs.put(name, str(count).encode())
    return count


# -- linear: greet -> shout ------------------------------------------------------------------


class GreetInput(BaseModel):
    """Who to greet (the DAG run's conf)."""

    name: str = Field(description="Who to greet")
    times: int = Field(2, ge=1, le=10, description="How many exclamation marks")
    style: str | None = Field(None, description="Optional style")
    tags: list[str] = Field(default_factory=list, description="Free-form tags")


class Greeting(BaseModel):
    text: str


class Shout(BaseModel):
    text: str
    length: int


class ShoutConfig(BaseModel):
    suffix: str = Field("", max_length=5)


def _greet(ctx: StageContext[GreetInput, Any]) -> Greeting:
    ctx.log("INFO", "greeting", name=ctx.input.name)
    # Evidence that the stage ran in a real Airflow task process, where Airflow hides its
    # own database: the engine worked through its own URL.
    from airflow import settings

    ctx.annotate("test.airflow_sql_alchemy_conn", str(settings.SQL_ALCHEMY_CONN))
    return Greeting(text=f"hello {ctx.input.name}" + "!" * ctx.input.times)


def _shout(ctx: StageContext[Greeting, ShoutConfig]) -> Shout:
    text = ctx.input.text.upper() + ctx.config.suffix
    return Shout(text=text, length=len(text))


greet = define_stage(id="greet", input=GreetInput, output=Greeting, execute=_greet)
shout = define_stage(id="shout", input=Greeting, output=Shout, config=ShoutConfig, execute=_shout)

linear = (
    WorkflowBuilder(
        "it-linear",
        "Linear greeting",
        "Greets someone, then shouts it.",
        input=GreetInput,
        output=Shout,
    )
    .pipe(greet)
    .pipe(shout)
    .build()
)


# -- fanout: split -> [upper, count] -> join -------------------------------------------------


class TextInput(BaseModel):
    text: str = Field(min_length=3, description="Some text")


class Words(BaseModel):
    words: list[str]


class Upper(BaseModel):
    words: list[str]


class Count(BaseModel):
    count: int


class Both(BaseModel):
    upper: Upper
    count: Count


class Joined(BaseModel):
    text: str
    count: int


def _split(ctx: StageContext[TextInput, Any]) -> Words:
    return Words(words=ctx.input.text.split())


def _upper(ctx: StageContext[Words, Any]) -> Upper:
    return Upper(words=[w.upper() for w in ctx.input.words])


def _count(ctx: StageContext[Words, Any]) -> Count:
    return Count(count=len(ctx.input.words))


def _join(ctx: StageContext[Both, Any]) -> Joined:
    return Joined(text=" ".join(ctx.input.upper.words), count=ctx.input.count.count)


split = define_stage(id="split", input=TextInput, output=Words, execute=_split)
upper = define_stage(id="upper", input=Words, output=Upper, execute=_upper)
count = define_stage(id="count", input=Words, output=Count, execute=_count)
join = define_stage(
    id="join", input=Both, output=Joined, execute=_join, dependencies=["upper", "count"]
)

fanout = (
    WorkflowBuilder("it-fanout", "Fan out", None, input=TextInput, output=Joined)
    .pipe(split)
    .parallel([upper, count])
    .pipe(join)
    .build()
)


# -- batch: prepare -> embed (async batch) -> finish -----------------------------------------


class BatchInput(BaseModel):
    items: list[str] = Field(min_length=1)


class Prepared(BaseModel):
    items: list[str]


class Embedded(BaseModel):
    vectors: list[int]
    batch_id: str


class Finished(BaseModel):
    total: int
    batch_id: str


class EmbedConfig(BaseModel):
    polls_needed: int = Field(2, ge=1)
    poll_interval: float = Field(1.0, gt=0)
    #: "output": check_completion returns the output; "resume": ready without output, so
    #: execute runs again with ctx.resume_state.
    mode: str = Field("output", pattern="^(output|resume)$")


def _prepare(ctx: StageContext[BatchInput, Any]) -> Prepared:
    return Prepared(items=ctx.input.items)


def _embed(ctx: StageContext[Prepared, EmbedConfig]) -> Suspended | Embedded:
    if ctx.resume_state is not None:
        _bump(ctx, "resumes")
        state = ctx.resume_state
        return Embedded(vectors=[len(i) for i in state["items"]], batch_id=state["id"])
    _bump(ctx, "submissions")
    return Suspended(
        state={"id": f"batch-{ctx.workflow_run_id[:8]}", "items": ctx.input.items},
        poll_interval=ctx.config.poll_interval,
        max_wait=600,
    )


def _embed_check(state: dict[str, Any], ctx: StageContext[Prepared, EmbedConfig]) -> Any:
    polls = _bump(ctx, "polls")
    if polls < ctx.config.polls_needed:
        return CompletionCheck(ready=False)
    if ctx.config.mode == "resume":
        return CompletionCheck(ready=True)
    return CompletionCheck(
        ready=True, output={"vectors": [len(i) for i in state["items"]], "batch_id": state["id"]}
    )


def _embed_cancel(state: dict[str, Any], ctx: StageContext[Prepared, EmbedConfig]) -> None:
    _bump(ctx, "cancels")  # where a real stage cancels its provider batch


def _finish(ctx: StageContext[Embedded, Any]) -> Finished:
    return Finished(total=sum(ctx.input.vectors), batch_id=ctx.input.batch_id)


prepare = define_stage(id="prepare", input=BatchInput, output=Prepared, execute=_prepare)
embed = define_async_batch_stage(
    id="embed",
    input=Prepared,
    output=Embedded,
    config=EmbedConfig,
    execute=_embed,
    check_completion=_embed_check,
    on_cancel=_embed_cancel,
)
finish = define_stage(id="finish", input=Embedded, output=Finished, execute=_finish)

batch = (
    WorkflowBuilder("it-batch", "Batch", "Prepare, embed in a batch, finish.", BatchInput, Finished)
    .pipe(prepare)
    .pipe(embed)
    .pipe(finish)
    .build()
)


# -- failure modes: flaky (retries), fatal (no retry), ghost (cancelled mid-stage) -----------


class Empty(BaseModel):
    pass


class Done(BaseModel):
    attempt: int


class FlakyConfig(BaseModel):
    succeed_on: int = Field(3, ge=1)


def _flaky(ctx: StageContext[Empty, FlakyConfig]) -> Done:
    if ctx.attempt < ctx.config.succeed_on:
        raise RuntimeError(f"transient failure on attempt {ctx.attempt}")
    return Done(attempt=ctx.attempt)


def _fatal(ctx: StageContext[Empty, Any]) -> Done:
    raise NonRetryableStageError("the input can never work")


def _ghost(ctx: StageContext[Empty, Any]) -> Done:
    # The run is cancelled while this stage runs (as when someone marks the DAG run failed):
    # the kernel must discard the result and the task must not be retried.
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.kernel.commands import RunCancel

    kernel = WorkflowEngineHook().get_kernel()
    kernel.dispatch(RunCancel(workflow_run_id=ctx.workflow_run_id, reason="test cancel"))
    return Done(attempt=ctx.attempt)


flaky = define_stage(id="flaky", input=Empty, output=Done, config=FlakyConfig, execute=_flaky)
fatal = define_stage(id="fatal", input=Empty, output=Done, execute=_fatal)
ghost = define_stage(id="ghost", input=Empty, output=Done, execute=_ghost)

flaky_workflow = WorkflowBuilder("it-flaky", "Flaky", None, Empty, Done).pipe(flaky).build()
fatal_workflow = WorkflowBuilder("it-fatal", "Fatal", None, Empty, Done).pipe(fatal).build()
ghost_workflow = WorkflowBuilder("it-ghost", "Ghost", None, Empty, Done).pipe(ghost).build()


# -- hand-wired DAG stages (the workflow is derived from the DAG) ----------------------------


class HandInput(BaseModel):
    text: str = Field(min_length=3, description="Text to measure")


class Measured(BaseModel):
    text: str
    chars: int


class Reported(BaseModel):
    report: str


def _measure(ctx: StageContext[HandInput, Any]) -> Measured:
    return Measured(text=ctx.input.text, chars=len(ctx.input.text))


def _report(ctx: StageContext[Measured, Any]) -> Reported:
    first = ctx.require("measure")
    return Reported(report=f"{first.text!r} has {ctx.input.chars} characters")


measure = define_stage(id="measure", input=HandInput, output=Measured, execute=_measure)
report = define_stage(
    id="report", input=Measured, output=Reported, execute=_report, dependencies=["measure"]
)
