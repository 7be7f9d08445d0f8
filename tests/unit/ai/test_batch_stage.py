"""define_ai_batch_stage with the real SDKs' batch APIs on the fake server (and the mock)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, with_ai_config
from airflow_workflow_engine.ai import (
    BatchItem,
    BatchRequest,
    InMemoryLedger,
    ProviderSettings,
    RetryPolicy,
    create_ai_helper,
    define_ai_batch_stage,
    make_ai_factory,
    register_model,
    unregister_model,
)
from airflow_workflow_engine.ai.batch import AIBatch
from airflow_workflow_engine.ai.batch_stage import batch_idempotency_key
from airflow_workflow_engine.ai.providers.mock import MockAdapter, clear_mock_batches
from airflow_workflow_engine.ai.settings import ProvidersLike
from airflow_workflow_engine.definitions.context import StageContext
from airflow_workflow_engine.errors import WorkflowDefinitionError
from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    RunCancel,
    RunClaimPending,
    RunCreate,
    RunRerunFrom,
    RunRerunStages,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import create_test_kernel, run_to_completion
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from airflow_workflow_engine.testing.kit import TestKit
from tests.fake_llm_fixtures import fake_llm

__all__ = ["fake_llm"]

MODELS = {"openai": "openai:gpt-test", "google": "google:gemini-test", "mock": "mock:batchy"}
PROVIDERS = [pytest.param(p, id=p) for p in MODELS]
USAGE = [
    {"input_tokens": 1000, "output_tokens": 100},
    {"input_tokens": 2000, "output_tokens": 300, "cached_tokens": 1000},
    {"input_tokens": 500, "output_tokens": 50},
]


@pytest.fixture(autouse=True)
def _prices() -> Iterator[None]:
    for key in MODELS.values():
        register_model(
            key,
            input_per_mtok=2,
            output_per_mtok=8,
            cached_input_per_mtok=Decimal("0.5"),
            batch_discount=Decimal("0.5"),
        )
    clear_mock_batches()
    yield
    clear_mock_batches()
    for key in MODELS.values():
        unregister_model(key)


def batch_cost(usage: dict[str, int]) -> Decimal:
    """Half of: fresh input x $2, cached input x $0.5, output x $8 per million tokens."""
    cached = usage.get("cached_tokens", 0)
    standard = (usage["input_tokens"] - cached) * 2 + cached * Decimal("0.5")
    return (standard + usage["output_tokens"] * 8) / 10**6 / 2


class Docs(BaseModel):
    texts: list[str]


class Answers(BaseModel):
    answers: dict[str, str]
    failed: list[str] = []


def build_requests(ctx: StageContext[Docs, Any]) -> list[BatchRequest]:
    return [
        BatchRequest(id=f"d{i}", prompt=text, max_tokens=50)
        for i, text in enumerate(ctx.input.texts)
    ]


def collect(items: list[BatchItem], ctx: StageContext[Docs, Any]) -> Answers:
    return Answers(
        answers={i.id: i.text or "" for i in items if i.ok},
        failed=[i.id for i in items if not i.ok],
    )


AIConfig = with_ai_config(BaseModel)


def workflow(**stage_kwargs: Any) -> Any:
    answer = define_ai_batch_stage(
        id="answer",
        input=Docs,
        output=Answers,
        config=AIConfig,
        build_requests=build_requests,
        collect=collect,
        poll_interval=30,
        max_wait=3600,
        **stage_kwargs,
    )
    return WorkflowBuilder("batchy", "Batchy", input=Docs, output=Answers).pipe(answer).build()


def make_kit(fake: FakeLLMServer, **stage_kwargs: Any) -> TestKit:
    ledger = InMemoryLedger()
    providers: ProvidersLike = {
        "openai": ProviderSettings(
            api_key="sk-test-batch-0123456789", base_url=fake.openai_base_url
        ),
        "google": ProviderSettings(api_key="test-gemini-key", base_url=fake.gemini_base_url),
        "mock": MockAdapter(batch_polls_until_done=1),
    }
    factory = make_ai_factory(
        ledger, providers=providers, retry=RetryPolicy(sleep=lambda _: None, rng=random.Random(1))
    )
    return create_test_kernel([workflow(**stage_kwargs)], ledger=ledger, ai_factory=factory)


def start(kit: TestKit, provider: str, texts: list[str] | None = None, **config: Any) -> str:
    result = kit.kernel.dispatch(
        RunCreate(
            workflow_id="batchy",
            input={"texts": texts or ["alpha beta", "gamma", "delta epsilon zeta"]},
            config={"answer": {"model": MODELS[provider], **config}},
        )
    )
    return str(result.workflow_run_id)


def script_usage(fake: FakeLLMServer, provider: str) -> list[dict[str, int]]:
    """Scripted answers with usage for the fake server; the mock counts words itself."""
    if provider == "mock":
        return [
            {"input_tokens": 2, "output_tokens": 3},
            {"input_tokens": 1, "output_tokens": 2},
            {"input_tokens": 3, "output_tokens": 4},
        ]
    for n, usage in enumerate(USAGE):
        fake.script(f"answer {n}", usage=usage, provider=provider)  # type: ignore[arg-type]
    return USAGE


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batch_stage_submits_suspends_polls_and_collects(
    fake_llm: FakeLLMServer, provider: str
) -> None:
    kit = make_kit(fake_llm)
    usages = script_usage(fake_llm, provider)
    run_id = start(kit, provider)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED, run.error_message
    answers = run.output["answers"]
    assert sorted(answers) == ["d0", "d1", "d2"]
    if provider != "mock":
        assert answers == {"d0": "answer 0", "d1": "answer 1", "d2": "answer 2"}
        assert fake_llm.batches_created[provider] == 1
    else:
        assert answers["d0"] == "echo: alpha beta"
    stage = kit.persistence.get_stage(run_id, "answer")
    assert stage is not None and stage.status == Status.COMPLETED
    handle = stage.suspended_state["handle"] if stage.suspended_state else None
    assert handle is not None
    # One ledger row per request, linked by batch id and request id, priced at batch rates.
    assert kit.ledger is not None
    rows = kit.ledger.entries(run_id)
    assert [(r.call_type, r.batch_id, r.request_id) for r in rows] == [
        ("batch", handle["batch_id"], f"d{n}") for n in range(3)
    ]
    expected = [batch_cost(u) for u in usages]
    assert [r.cost for r in rows] == expected
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [
        (u["input_tokens"], u["output_tokens"]) for u in usages
    ]
    assert stage.metrics["ai_cost"] == float(sum(expected))
    assert run.total_cost == float(sum(expected))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_between_submit_and_suspend_reattaches_to_the_same_batch(
    fake_llm: FakeLLMServer, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = AIBatch.submit
    handles: list[Any] = []

    def submit_then_crash(
        self: AIBatch, requests: Any, *, idempotency_key: str | None = None
    ) -> Any:
        handle = original(self, requests, idempotency_key=idempotency_key)
        handles.append(handle)
        if len(handles) == 1:
            raise ConnectionResetError("worker lost after submitting, before suspending")
        return handle

    monkeypatch.setattr(AIBatch, "submit", submit_then_crash)
    kit = make_kit(fake_llm)
    script_usage(fake_llm, provider)
    run_id = start(kit, provider)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED, run.error_message
    stage = kit.persistence.get_stage(run_id, "answer")
    assert stage is not None and stage.attempt == 2  # the retry re-attached
    assert len(handles) == 2 and handles[0].batch_id == handles[1].batch_id
    if provider != "mock":
        assert fake_llm.batches_created[provider] == 1  # paid once
    else:
        from airflow_workflow_engine.ai.providers import mock

        assert len(mock._STORE) == 1
    assert kit.ledger is not None and len(kit.ledger.entries(run_id)) == 3


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_cancelling_the_run_cancels_the_provider_batch(
    fake_llm: FakeLLMServer, provider: str
) -> None:
    fake_llm.batch_polls_until_done = 100
    kit = make_kit(fake_llm)
    run_id = start(kit, provider)
    kit.kernel.dispatch(RunClaimPending())
    result = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="answer", attempt=1))
    assert result.outcome == "suspended"
    stage = kit.persistence.get_stage(run_id, "answer")
    assert stage is not None and stage.suspended_state is not None
    batch_id = stage.suspended_state["handle"]["batch_id"]
    assert kit.kernel.dispatch(RunCancel(workflow_run_id=run_id)).cancelled
    cancels = [r for r in fake_llm.requests if r.path.endswith(("/cancel", ":cancel"))]
    assert len(cancels) == 1 and batch_id.split("/")[-1] in cancels[0].path
    helper = create_ai_helper(
        "check",
        InMemoryLedger(),
        providers={
            "openai": ProviderSettings(
                api_key="sk-x-0123456789", base_url=fake_llm.openai_base_url
            ),
            "google": ProviderSettings(api_key="g-0123456", base_url=fake_llm.gemini_base_url),
        },
    )
    status = helper.batch(MODELS[provider]).status(stage.suspended_state["handle"])
    assert status.state.value == "cancelled"


def test_a_failed_provider_batch_fails_the_stage(fake_llm: FakeLLMServer) -> None:
    fake_llm.batch_outcome = "failed"
    kit = make_kit(fake_llm)
    run_id = start(kit, "openai")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert run.error_message is not None and "ended failed" in run.error_message


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_failed_requests_fail_the_stage_by_default(fake_llm: FakeLLMServer, provider: str) -> None:
    fake_llm.fail_batch_items("d1", message="context too long")
    kit = make_kit(fake_llm)
    run_id = start(kit, provider)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert run.error_message is not None
    assert "1 of 3 requests of batch" in run.error_message
    assert "d1: context too long" in run.error_message
    assert kit.ledger is not None
    statuses = [(r.request_id, r.status) for r in kit.ledger.entries(run_id)]
    assert statuses == [("d0", "ok"), ("d1", "error"), ("d2", "ok")]


def test_failed_requests_can_be_collected(fake_llm: FakeLLMServer) -> None:
    fake_llm.fail_batch_items("d1")
    kit = make_kit(fake_llm, on_item_error="collect")
    run_id = start(kit, "openai")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert run.output["failed"] == ["d1"]
    assert sorted(run.output["answers"]) == ["d0", "d2"]


def test_the_stage_budget_stops_a_submission(fake_llm: FakeLLMServer) -> None:
    kit = make_kit(fake_llm)
    run_id = start(kit, "openai", max_cost=0)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert run.error_message is not None and "AI budget exceeded" in run.error_message
    assert fake_llm.batches_created["openai"] == 0


def test_results_read_twice_are_recorded_once(fake_llm: FakeLLMServer) -> None:
    ledger = InMemoryLedger()
    helper = create_ai_helper(
        "t",
        ledger,
        providers={
            "openai": ProviderSettings(api_key="sk-x-0123456789", base_url=fake_llm.openai_base_url)
        },
    )
    batch = helper.batch(MODELS["openai"])
    handle = batch.submit([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y z"}])
    again = batch.submit([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y z"}])
    assert again.batch_id == handle.batch_id and fake_llm.batches_created["openai"] == 1
    while not batch.status(handle).is_terminal:
        pass
    first = batch.results(handle.model_dump(mode="json"))
    second = batch.results(handle)
    assert first == second
    assert [(r.request_id, r.cost) for r in ledger.entries()] == [
        ("a", first[0].cost),
        ("b", first[1].cost),
    ]


def test_idempotency_key_ignores_the_attempt_but_not_the_requests() -> None:
    requests = [BatchRequest(id="a", prompt="x")]
    key = batch_idempotency_key("run-1", "stage", "openai:gpt-test", requests)
    assert key == batch_idempotency_key("run-1", "stage", "openai:gpt-test", list(requests))
    assert key != batch_idempotency_key("run-2", "stage", "openai:gpt-test", requests)
    assert key != batch_idempotency_key(
        "run-1", "stage", "openai:gpt-test", [BatchRequest(id="a", prompt="y")]
    )
    assert key != batch_idempotency_key("run-1", "stage", "google:g", requests)
    # A rerun is a new execution of the stage (a new stage row): a new key.
    execution = batch_idempotency_key("run-1", "stage", "openai:gpt-test", requests, "row-1")
    assert execution == batch_idempotency_key(
        "run-1", "stage", "openai:gpt-test", requests, "row-1"
    )
    assert execution not in (
        key,
        batch_idempotency_key("run-1", "stage", "openai:gpt-test", requests, "row-2"),
    )


def test_definition_errors() -> None:
    with pytest.raises(WorkflowDefinitionError, match="must be callable"):
        define_ai_batch_stage(id="x", output=Answers, build_requests=None, collect=collect)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poll_interval"):
        define_ai_batch_stage(
            id="x", output=Answers, build_requests=build_requests, collect=collect, poll_interval=0
        )


def test_a_model_is_required(fake_llm: FakeLLMServer) -> None:
    stage = define_ai_batch_stage(
        id="answer", input=Docs, output=Answers, build_requests=build_requests, collect=collect
    )
    wf = WorkflowBuilder("batchy", "Batchy", input=Docs, output=Answers).pipe(stage).build()
    kit = create_test_kernel([wf])
    run_id = kit.kernel.dispatch(RunCreate(workflow_id="batchy", input={"texts": ["a"]}))
    run = run_to_completion(kit.kernel, kit.job_transport, run_id.workflow_run_id)
    assert run.status == Status.FAILED
    assert run.error_message is not None and "no model" in run.error_message


class WorkerKilled(BaseException):
    """The process dies: no exception handler, no outcome transaction."""


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_worker_killed_after_submit_then_retried_pays_once(
    fake_llm: FakeLLMServer, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = AIBatch.submit
    calls: list[str] = []

    def submit_then_die(self: AIBatch, requests: Any, *, idempotency_key: str | None = None) -> Any:
        handle = original(self, requests, idempotency_key=idempotency_key)
        calls.append(handle.batch_id)
        if len(calls) == 1:
            raise WorkerKilled
        return handle

    monkeypatch.setattr(AIBatch, "submit", submit_then_die)
    kit = make_kit(fake_llm)
    run_id = start(kit, provider)
    kit.kernel.dispatch(RunClaimPending())
    with pytest.raises(WorkerKilled):
        kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="answer", attempt=1))
    stage = kit.persistence.get_stage(run_id, "answer")
    assert stage is not None and stage.status == Status.RUNNING  # left behind by the dead worker
    # Airflow runs the task again (a new try): the stage re-attaches to the submitted batch.
    retry = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="answer", attempt=2))
    assert retry.outcome == "suspended" and retry.attempt == 2
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED, run.error_message
    assert calls[0] == calls[1]
    assert fake_llm.batches_created[provider] == 1


def batch_annotations(kit: TestKit, run_id: str) -> list[tuple[int | None, str]]:
    """``(attempt, batch id)`` of each ``ai.batch`` provenance annotation, oldest first."""
    return [
        (a.attempt, a.value["batch_id"])
        for a in kit.persistence.list_annotations(run_id, key_prefix="ai.batch")
    ]


@pytest.mark.parametrize("provider", ["openai", "google"])
@pytest.mark.parametrize("rerun", ["rerunStages", "rerunFrom"])
def test_a_rerun_of_a_completed_batch_stage_submits_a_new_batch(
    fake_llm: FakeLLMServer, provider: str, rerun: str
) -> None:
    """Clear = rerun: attempt 2 pays for a new batch, and ledger and provenance say so."""
    kit = make_kit(fake_llm)
    run_id = start(kit, provider)
    first = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert first.status == Status.COMPLETED, first.error_message
    assert fake_llm.batches_created[provider] == 1
    command: Any = (
        RunRerunStages(workflow_run_id=run_id, stage_ids=["answer"], reason="cleared")
        if rerun == "rerunStages"
        else RunRerunFrom(workflow_run_id=run_id, from_stage_id="answer")
    )
    assert kit.kernel.dispatch(command).deleted_stages == ["answer"]
    second = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert second.status == Status.COMPLETED, second.error_message
    assert fake_llm.batches_created[provider] == 2  # a new provider batch, not the old one
    stage = kit.persistence.get_stage(run_id, "answer")
    assert stage is not None and stage.attempt == 2
    assert stage.suspended_state is not None
    new_batch = stage.suspended_state["handle"]["batch_id"]
    provenance = batch_annotations(kit, run_id)
    assert [a for a, _ in provenance] == [1, 2]
    assert provenance[1][1] == new_batch != provenance[0][1]
    assert kit.ledger is not None
    rows = kit.ledger.entries(run_id)
    by_attempt = {
        a: sorted((r.batch_id, r.request_id) for r in rows if r.attempt == a) for a in (1, 2)
    }
    assert by_attempt == {
        1: [(provenance[0][1], f"d{n}") for n in range(3)],
        2: [(new_batch, f"d{n}") for n in range(3)],
    }
    # The run's cost covers both batches: both were paid for.
    assert second.total_cost == pytest.approx(2 * first.total_cost)


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_a_suspended_batch_stage_reattaches_on_clear_and_duplicate_delivery(
    fake_llm: FakeLLMServer, provider: str
) -> None:
    """The same suspended attempt: a clear leaves it alone, a duplicate delivery is replayed
    and polls resume the one batch; nothing is submitted again."""
    fake_llm.batch_polls_until_done = 100
    kit = make_kit(fake_llm)
    run_id = start(kit, provider)
    kit.kernel.dispatch(RunClaimPending())
    first = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="answer", attempt=1))
    assert first.outcome == "suspended"
    cleared = kit.kernel.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["answer"]))
    assert cleared.deleted_stages == []  # not finished: left alone
    again = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="answer", attempt=2))
    assert again.outcome == "suspended" and again.replayed
    fake_llm.batch_polls_until_done = 1
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED, run.error_message
    assert fake_llm.batches_created[provider] == 1
    provenance = batch_annotations(kit, run_id)
    assert [a for a, _ in provenance] == [1]
    assert kit.ledger is not None
    rows = kit.ledger.entries(run_id)
    assert {(r.attempt, r.batch_id) for r in rows} == {(1, provenance[0][1])}
    assert len(rows) == 3


def test_a_batch_stage_failing_after_its_results_keeps_their_rows_marked(
    fake_llm: FakeLLMServer,
) -> None:
    """The results were read (and paid for) before the stage failed on a failed request: the
    rows stay, and say that the attempt failed."""
    fake_llm.fail_batch_items("d1", message="context too long")
    kit = make_kit(fake_llm)
    run_id = start(kit, "openai")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert kit.ledger is not None
    rows = kit.ledger.entries(run_id)
    assert sorted(r.request_id or "" for r in rows) == ["d0", "d1", "d2"]
    assert all(
        r.failure is not None and r.failure.startswith("stage attempt 1 failed: 1 of 3 requests")
        for r in rows
    ), [r.failure for r in rows]
    assert run.total_cost is not None and run.total_cost > 0
