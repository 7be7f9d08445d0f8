"""StageContext: earlier outputs, logging, progress, annotations, blobs and the AI helper."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from airflow_workflow_engine import Actor, StageContext, typed_key
from airflow_workflow_engine.blob.memory import InMemoryBlobStore
from airflow_workflow_engine.blob.scoped import ScopedBlobStore
from airflow_workflow_engine.conventions import Approval, Decision, Trigger
from airflow_workflow_engine.definitions.annotations import PendingAnnotation, TypedKey
from airflow_workflow_engine.definitions.context import LogEntry, ProgressUpdate
from airflow_workflow_engine.errors import (
    MissingStageOutputError,
    NonRetryableStageError,
    WorkflowEngineError,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Doc(BaseModel):
    text: str


class Count(BaseModel):
    n: int


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


def make_ctx(**overrides: Any) -> StageContext[Any, Any]:
    kwargs: dict[str, Any] = {
        "workflow_run_id": "run-1",
        "workflow_id": "docs",
        "stage_id": "report",
        "input": Doc(text="hello"),
        "config": None,
        "workflow_context": {"extract": Doc(text="raw"), "count": Count(n=2)},
        "now": Clock().now,
    }
    kwargs.update(overrides)
    return StageContext(**kwargs)


def stage_actor(stage_id: str = "report") -> Actor:
    return Actor(kind="stage", id=stage_id)


# -- basics -----------------------------------------------------------------------------------


def test_context_attributes() -> None:
    ctx = make_ctx(attempt=2, resume_state={"batch": "b"})
    assert (ctx.workflow_run_id, ctx.workflow_id, ctx.stage_id) == ("run-1", "docs", "report")
    assert ctx.input == Doc(text="hello")
    assert (ctx.attempt, ctx.resume_state) == (2, {"batch": "b"})
    assert repr(ctx) == "StageContext(run='run-1', stage='report')"


def test_context_defaults() -> None:
    ctx = make_ctx()
    assert (ctx.attempt, ctx.resume_state) == (1, None)
    assert ctx.buffer.annotations == ctx.buffer.logs == ctx.buffer.progress == []
    assert ctx.buffer.metrics == {}


def test_workflow_context_is_a_copy() -> None:
    outputs: dict[str, BaseModel] = {"extract": Doc(text="raw")}
    ctx = make_ctx(workflow_context=outputs)
    outputs["late"] = Doc(text="added later")
    assert ctx.optional("late") is None


# -- require / optional -----------------------------------------------------------------------


def test_require_returns_an_earlier_output() -> None:
    ctx = make_ctx()
    assert ctx.require("count") == Count(n=2)
    assert ctx.require("extract").text == "raw"


def test_require_missing_output_names_the_stages() -> None:
    ctx = make_ctx()
    with pytest.raises(MissingStageOutputError) as err:
        ctx.require("summarize")
    assert str(err.value) == (
        "Stage 'report' requires the output of stage 'summarize', which is not available "
        "(completed earlier stages: extract, count). Check the stage id and that 'summarize' "
        "runs in an earlier group."
    )
    assert (err.value.stage_id, err.value.wanted) == ("report", "summarize")


def test_require_missing_output_fails_without_retry() -> None:
    with pytest.raises(MissingStageOutputError) as err:
        make_ctx(workflow_context={}).require("extract")
    assert "(completed earlier stages: none)" in str(err.value)
    assert isinstance(err.value, NonRetryableStageError)
    assert err.value.retryable is False


def test_optional() -> None:
    ctx = make_ctx()
    assert ctx.optional("count") == Count(n=2)
    assert ctx.optional("summarize") is None


# -- log / progress / metric ------------------------------------------------------------------


def test_log_buffers_entries_with_upper_case_level_and_time() -> None:
    ctx = make_ctx()
    ctx.log("info", "started", items=3)
    ctx.log("WARN", "slow")
    assert ctx.buffer.logs == [
        LogEntry("INFO", "started", {"items": 3}, T0 + timedelta(seconds=1)),
        LogEntry("WARN", "slow", {}, T0 + timedelta(seconds=2)),
    ]


def test_log_goes_to_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx()
    with caplog.at_level(logging.DEBUG, logger="airflow_workflow_engine.stage"):
        ctx.log("ERROR", "broken", code=7)
        ctx.log("WARN", "careful")
        ctx.log("custom", "unknown level")
    records = [r for r in caplog.records if r.name == "airflow_workflow_engine.stage"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.WARNING, logging.INFO]
    assert records[0].getMessage() == "[report] broken {'code': 7}"
    assert ctx.buffer.logs[2].level == "CUSTOM"


def test_progress_buffers_and_reports() -> None:
    seen: list[ProgressUpdate] = []
    ctx = make_ctx(on_progress=seen.append)
    ctx.progress(0)
    ctx.progress(0.5, "half way")
    ctx.progress(1)
    assert [(u.fraction, u.message) for u in ctx.buffer.progress] == [
        (0.0, None),
        (0.5, "half way"),
        (1.0, None),
    ]
    assert seen == ctx.buffer.progress
    assert isinstance(ctx.buffer.progress[0].fraction, float)


@pytest.mark.parametrize("fraction", [-0.01, 1.01, 50, float("nan")])
def test_progress_outside_zero_one_is_rejected(fraction: float) -> None:
    ctx = make_ctx()
    with pytest.raises(ValueError) as err:
        ctx.progress(fraction)
    assert str(err.value) == f"progress fraction must be within [0, 1], got {fraction}"
    assert ctx.buffer.progress == []


def test_metric() -> None:
    ctx = make_ctx()
    ctx.metric("pages", 3)
    ctx.metric("pages", 4)
    assert ctx.buffer.metrics == {"pages": 4}


# -- annotate ---------------------------------------------------------------------------------


def test_annotate_key_value_is_attributed_to_the_stage() -> None:
    ctx = make_ctx()
    ctx.annotate("acme.compliance.signoff", "alice@acme.com")
    assert ctx.buffer.annotations == [
        PendingAnnotation("acme.compliance.signoff", "alice@acme.com", stage_actor())
    ]


def test_annotate_with_typed_keys_from_conventions() -> None:
    ctx = make_ctx()
    ctx.annotate(Decision.outcome, "low")
    ctx.annotate(Decision.confidence, 0.42)
    ctx.annotate(Approval.status, Approval.APPROVED)
    assert [(a.key, a.value) for a in ctx.buffer.annotations] == [
        ("decision.outcome", "low"),
        ("decision.confidence", 0.42),
        ("approval.status", "approved"),
    ]
    assert {a.actor for a in ctx.buffer.annotations} == {stage_actor()}


def test_typed_key() -> None:
    key = typed_key("acme.score", float)
    assert isinstance(key, TypedKey)
    assert (key.key, str(key)) == ("acme.score", "acme.score")
    assert key == TypedKey("acme.score")
    assert str(Trigger.source) == "trigger.source"


def test_annotate_with_actor_and_attributes() -> None:
    ctx = make_ctx()
    ctx.annotate(
        actor={"kind": "agent", "id": "triage-v3", "version": "3.1"},
        attributes={"decision.outcome": "low", "decision.used_fallback": True},
    )
    agent = Actor(kind="agent", id="triage-v3", version="3.1")
    assert ctx.buffer.annotations == [
        PendingAnnotation("decision.outcome", "low", agent),
        PendingAnnotation("decision.used_fallback", True, agent),
    ]


def test_annotate_with_an_actor_instance() -> None:
    ctx = make_ctx()
    alice = Actor(kind="user", id="alice")
    ctx.annotate(actor=alice, attributes={"review": "ok"})
    assert ctx.buffer.annotations == [PendingAnnotation("review", "ok", alice)]


def test_annotate_with_a_dict_spec() -> None:
    ctx = make_ctx()
    ctx.annotate(
        {
            "actor": {"kind": "agent", "id": "triage-v3"},
            "attributes": {"decision.rationale": "below threshold"},
        }
    )
    assert ctx.buffer.annotations == [
        PendingAnnotation(
            "decision.rationale", "below threshold", Actor(kind="agent", id="triage-v3")
        )
    ]


def test_annotate_dict_spec_without_actor_is_attributed_to_the_stage() -> None:
    ctx = make_ctx()
    ctx.annotate({"attributes": {"k": 1}})
    assert ctx.buffer.annotations == [PendingAnnotation("k", 1, stage_actor())]


def test_annotate_key_value_with_an_explicit_actor() -> None:
    ctx = make_ctx()
    ctx.annotate(Decision.outcome, "high", actor={"kind": "agent", "id": "a1"})
    assert ctx.buffer.annotations == [
        PendingAnnotation("decision.outcome", "high", Actor(kind="agent", id="a1"))
    ]


def test_annotations_accumulate_in_order() -> None:
    ctx = make_ctx()
    ctx.annotate("a", 1)
    ctx.annotate(actor={"kind": "agent", "id": "x"}, attributes={"b": 2})
    ctx.annotate({"attributes": {"c": 3}})
    assert [a.key for a in ctx.buffer.annotations] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "call",
    [
        lambda ctx: ctx.annotate(),
        lambda ctx: ctx.annotate(actor={"kind": "agent", "id": "x"}, attributes={}),
        lambda ctx: ctx.annotate(actor={"kind": "agent", "id": "x"}),
        lambda ctx: ctx.annotate({}),
        lambda ctx: ctx.annotate({"actor": {"kind": "agent", "id": "x"}}),
    ],
    ids=["nothing", "empty-attributes", "actor-only", "empty-spec", "spec-without-attributes"],
)
def test_annotate_without_attributes_is_rejected(call: Any) -> None:
    ctx = make_ctx()
    with pytest.raises(ValueError) as err:
        call(ctx)
    assert str(err.value) == "annotate() needs a key and value, or actor= and attributes="
    assert ctx.buffer.annotations == []


def test_annotate_with_an_invalid_actor_is_rejected() -> None:
    ctx = make_ctx()
    with pytest.raises(ValidationError) as err:
        ctx.annotate(actor={"kind": "agent"}, attributes={"k": 1})
    assert err.value.errors()[0]["loc"] == ("id",)


# -- blobs ------------------------------------------------------------------------------------


def test_blobs_without_a_store_raise_a_clear_error() -> None:
    ctx = make_ctx()
    with pytest.raises(WorkflowEngineError) as err:
        _ = ctx.blobs
    assert str(err.value) == "No blob store is configured for this kernel."


def test_blobs_with_a_store() -> None:
    store = InMemoryBlobStore()
    scoped = ScopedBlobStore(store, "runs/run-1/stages/report/")
    ctx = make_ctx(blobs=scoped)
    assert ctx.blobs is scoped
    ctx.blobs.put("artifact.txt", b"data")
    assert store.get("runs/run-1/stages/report/artifact.txt") == b"data"


# -- ai ---------------------------------------------------------------------------------------


def test_ai_without_a_factory_raises_a_clear_error() -> None:
    ctx = make_ctx()
    with pytest.raises(WorkflowEngineError) as err:
        _ = ctx.ai
    assert str(err.value) == (
        "ctx.ai is not configured: create the kernel with an ai_factory "
        "(airflow_workflow_engine.ai) or run the stage under the Airflow provider."
    )


def test_ai_is_built_lazily_once_from_the_factory() -> None:
    calls: list[StageContext[Any, Any]] = []

    def factory(ctx: StageContext[Any, Any]) -> object:
        calls.append(ctx)
        return object()

    ctx = make_ctx(ai_factory=factory)
    assert calls == []  # nothing built until a stage asks
    helper = ctx.ai
    assert ctx.ai is helper
    assert calls == [ctx]
