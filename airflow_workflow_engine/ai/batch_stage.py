"""``define_ai_batch_stage``: an async-batch stage around a provider's batch API.

``execute`` builds the requests, submits them with ``ctx.ai.batch(model)`` and suspends with
the batch handle; ``check_completion`` polls the batch and, once it is done, turns its results
into the stage's output with ``collect``; ``on_cancel`` cancels the provider batch when the run
is cancelled.

A retry never pays twice: the idempotency key is a hash of the run id, the stage id, the
model, the requests and the stage's execution (``ctx.execution_id``: its row in the run, kept
by every retry and resume of the stage, never the attempt). When a worker dies after
submitting, or Airflow retries the task, the new attempt re-attaches to the batch already
submitted; ``build_requests`` must therefore be deterministic for a given input and config.
A rerun of a finished stage (``run.rerunStages``, ``run.rerunFrom``, a clear in Airflow) is a
new execution: it submits a new batch, whose results get ledger rows at the new attempt (see
``docs/adr/0002-batch-rerun-submits-new-batch.md``). Each attempt that submits or re-attaches
records the batch id in the annotation ``ai.batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from airflow_workflow_engine.ai.batch import batch_fingerprint
from airflow_workflow_engine.ai.providers.base import BatchHandle, BatchRequest, BatchState
from airflow_workflow_engine.ai.results import BatchItem
from airflow_workflow_engine.definitions.context import StageContext
from airflow_workflow_engine.definitions.stage import (
    CompletionCheck,
    Stage,
    Suspended,
    define_async_batch_stage,
)
from airflow_workflow_engine.errors import WorkflowDefinitionError

__all__ = ["batch_idempotency_key", "define_ai_batch_stage"]

OutputT = TypeVar("OutputT", bound=BaseModel)

BuildRequests = Callable[[StageContext[Any, Any]], Sequence[BatchRequest]]
Collect = Callable[[list[BatchItem], StageContext[Any, Any]], Any]


def batch_idempotency_key(
    workflow_run_id: str,
    stage_id: str,
    model: str,
    requests: Sequence[BatchRequest],
    execution_id: str | None = None,
) -> str:
    """The submission key of a stage's batch: the same for every attempt of one execution of
    the stage (retries re-attach), new for a rerun (``execution_id`` changes)."""
    parts = (workflow_run_id, stage_id) + ((execution_id,) if execution_id else ())
    return "wfe-" + batch_fingerprint(model, requests, *parts)


def define_ai_batch_stage(
    *,
    id: str,
    output: type[OutputT],
    build_requests: BuildRequests,
    collect: Collect,
    model: str | None = None,
    input: type[BaseModel] | None = None,
    config: type[BaseModel] | None = None,
    name: str | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
    poll_interval: float = 60.0,
    max_wait: float | None = 86_400.0,
    on_item_error: Literal["fail", "collect"] = "fail",
) -> Stage[Any, OutputT, Any]:
    """An async-batch stage that runs ``build_requests(ctx)`` as one provider batch.

    ``model``: a model key, or ``None`` to use the stage config's ``model`` (``with_ai_config``).
    ``collect(results, ctx)`` gets one :class:`~airflow_workflow_engine.ai.results.BatchItem`
    per request, in order, and returns the output. With ``on_item_error="fail"`` (default) a
    batch with failed requests fails the stage, naming them; ``"collect"`` passes them on.
    """
    if not callable(build_requests) or not callable(collect):
        raise WorkflowDefinitionError(f"Stage '{id}': build_requests and collect must be callable.")
    if on_item_error not in ("fail", "collect"):
        raise WorkflowDefinitionError(f"Stage '{id}': on_item_error must be 'fail' or 'collect'.")
    Suspended(state={}, poll_interval=poll_interval, max_wait=max_wait)  # validates both

    def model_of(ctx: StageContext[Any, Any]) -> str:
        chosen = model or getattr(ctx.config, "model", None)
        if not isinstance(chosen, str):
            raise WorkflowDefinitionError(
                f"Stage '{ctx.stage_id}': no model: pass model= to define_ai_batch_stage or give "
                "the stage a config with a 'model' field (with_ai_config)."
            )
        return chosen

    def execute(ctx: StageContext[Any, Any]) -> Suspended:
        requests = [
            r if isinstance(r, BatchRequest) else BatchRequest.model_validate(r)
            for r in build_requests(ctx)
        ]
        chosen = model_of(ctx)
        key = batch_idempotency_key(
            ctx.workflow_run_id,
            ctx.stage_id,
            chosen,
            requests,
            getattr(ctx, "execution_id", None),
        )
        handle = ctx.ai.batch(chosen).submit(requests, idempotency_key=key)
        # Provenance: which provider batch this attempt's output comes from.
        ctx.annotate(
            "ai.batch",
            {
                "batch_id": handle.batch_id,
                "provider": handle.provider,
                "model": chosen,
                "attempt": ctx.attempt,
                "requests": len(requests),
                "idempotency_key": key,
            },
        )
        ctx.log(
            "INFO",
            "batch submitted",
            batch_id=handle.batch_id,
            model=chosen,
            requests=len(requests),
            idempotency_key=key,
        )
        return Suspended(
            state={"model": chosen, "handle": handle.model_dump(mode="json")},
            poll_interval=poll_interval,
            max_wait=max_wait,
        )

    def check_completion(state: dict[str, Any], ctx: StageContext[Any, Any]) -> CompletionCheck:
        batch = ctx.ai.batch(state["model"])
        handle = BatchHandle.model_validate(state["handle"])
        status = batch.status(handle)
        if not status.is_terminal:
            return CompletionCheck(ready=False)
        if status.state is not BatchState.COMPLETED:
            detail = f": {status.error}" if status.error else ""
            return CompletionCheck(
                ready=False,
                error=f"provider batch {handle.batch_id} ended {status.provider_state}{detail}",
            )
        items = batch.results(handle)
        failed = [i for i in items if not i.ok]
        if failed and on_item_error == "fail":
            listed = "; ".join(f"{i.id}: {i.error}" for i in failed[:10])
            more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
            return CompletionCheck(
                ready=False,
                error=f"{len(failed)} of {len(items)} requests of batch {handle.batch_id} "
                f"failed: {listed}{more}",
            )
        value = collect(items, ctx)
        return CompletionCheck(
            ready=True,
            output=value.model_dump(mode="json") if isinstance(value, BaseModel) else value,
        )

    def on_cancel(state: dict[str, Any], ctx: StageContext[Any, Any]) -> None:
        handle = BatchHandle.model_validate(state["handle"])
        status = ctx.ai.batch(state["model"]).cancel(handle)
        ctx.log("INFO", "batch cancelled", batch_id=handle.batch_id, state=status.provider_state)

    return define_async_batch_stage(
        id=id,
        output=output,
        execute=execute,
        check_completion=check_completion,
        input=input,
        config=config,
        name=name,
        description=description,
        dependencies=dependencies,
        on_cancel=on_cancel,
    )
