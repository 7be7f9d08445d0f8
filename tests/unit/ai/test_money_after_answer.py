"""Once a provider has answered, its ledger row is written before anything else can fail.

The real ``openai`` SDK talks to the fake LLM server; a fault is injected once, at each step
after the answer (pricing, reading the answer, validating it, budget accounting, the stage's
output validation, the stage raising afterwards), on memory, SQLite and PostgreSQL. Every
answered call keeps its row, the row says what failed, and the retry's row is added beside it.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage
from airflow_workflow_engine.ai import (
    InMemoryLedger,
    Ledger,
    LedgerEntry,
    ProviderSettings,
    RetryPolicy,
    make_ai_factory,
)
from airflow_workflow_engine.ai import helper as helper_module
from airflow_workflow_engine.ai import prices as prices_module
from airflow_workflow_engine.ai import recorder as recorder_module
from airflow_workflow_engine.ai.prices import UnknownPriceWarning
from airflow_workflow_engine.ai.providers.openai import OpenAIAdapter
from airflow_workflow_engine.ai.recorder import CallRecorder
from airflow_workflow_engine.definitions.context import StageContext
from airflow_workflow_engine.kernel.commands import RunCreate
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import create_test_kernel, run_to_completion
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from airflow_workflow_engine.testing.kit import TestKit
from tests.backends import BACKENDS, backend_params
from tests.fake_llm_fixtures import fake_llm

__all__ = ["fake_llm"]

MODEL = "openai:gpt-4o-mini"
#: What the stage does after its call, by test: ``"raise"`` or ``"bad output"`` (attempt 1).
AFTER: dict[str, str] = {}


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    text: str


def _ask(ctx: StageContext[Question, Any]) -> Any:
    mode = AFTER.get("mode", "text")
    if mode == "object":
        result: Any = ctx.ai.generate_object(MODEL, ctx.input.text, Answer)
        text = result.object.text
    else:
        text = ctx.ai.generate_text(MODEL, ctx.input.text).text
    if ctx.attempt == 1 and AFTER.get("fault") == "raise":
        raise RuntimeError("injected: the stage failed after its call")
    if ctx.attempt == 1 and AFTER.get("fault") == "bad output":
        return {"not_text": text}
    return Answer(text=text)


ask = define_stage(id="ask", input=Question, output=Answer, execute=_ask)
WORKFLOW = WorkflowBuilder("money", "Money", input=Question, output=Answer).pipe(ask).build()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    AFTER.clear()
    prices_module._warned.clear()
    yield
    AFTER.clear()
    prices_module._warned.clear()


@pytest.fixture(params=backend_params())
def ledger_kit(
    request: pytest.FixtureRequest, fake_llm: FakeLLMServer
) -> Iterator[tuple[TestKit, Ledger]]:
    """A kernel whose stages call OpenAI (the fake server), with the ledger beside the runs."""
    providers = {
        "openai": ProviderSettings(api_key="sk-test-0123456789", base_url=fake_llm.openai_base_url)
    }
    retry = RetryPolicy(sleep=lambda _: None, rng=random.Random(1))
    if request.param == "memory":
        ledger: Ledger = InMemoryLedger()
        factory = make_ai_factory(ledger, providers=providers, retry=retry)
        yield create_test_kernel([WORKFLOW], ledger=ledger, ai_factory=factory), ledger
        return
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    with BACKENDS[request.param](request) as store:
        ledger = SqlLedger(store.engine)
        factory = make_ai_factory(ledger, providers=providers, retry=retry)
        kit = create_test_kernel([WORKFLOW], persistence=store, ledger=ledger, ai_factory=factory)
        yield kit, ledger


def run(kit: TestKit) -> tuple[str, Status]:
    created = kit.kernel.dispatch(RunCreate(workflow_id="money", input={"text": "what is 2+2"}))
    record = run_to_completion(kit.kernel, kit.job_transport, str(created.workflow_run_id))
    return record.id, record.status


def chat_calls(fake: FakeLLMServer) -> int:
    return len(fake.requests_to("/chat/completions", method="POST"))


def once(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``original``, except that its first call raises (the injected fault)."""
    fired: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            raise RuntimeError(f"injected {what} fault")
        return original(*args, **kwargs)

    return wrapper


def test_missing_price_catalogue_is_price_unknown(
    ledger_kit: tuple[TestKit, Ledger],
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``pip install 'airflow-workflow-engine[openai]'`` without genai-prices: the answered call
    is recorded once with cost NULL and a warning, and the stage completes (no paid retry)."""
    kit, ledger = ledger_kit
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # `import genai_prices` fails
    with pytest.warns(UnknownPriceWarning, match="genai-prices is not installed"):
        run_id, status = run(kit)
    assert status == Status.COMPLETED
    rows = ledger.entries(run_id)
    assert [(r.attempt, r.status, r.cost, r.failure) for r in rows] == [(1, "ok", None, None)]
    assert rows[0].input_tokens > 0 and rows[0].output_tokens > 0
    assert chat_calls(fake_llm) == 1


def _inject(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if step == "pricing":
        monkeypatch.setattr(
            recorder_module, "cost_of_call", once(recorder_module.cost_of_call, step)
        )
    elif step == "reading the answer":
        monkeypatch.setattr(OpenAIAdapter, "_response", once(OpenAIAdapter._response, step))
    elif step == "validating the answer":
        AFTER["mode"] = "object"
        monkeypatch.setattr(helper_module, "_validate", once(helper_module._validate, step))
    elif step == "budget accounting":
        monkeypatch.setattr(CallRecorder, "_account", once(CallRecorder._account, step))
    elif step == "stage output validation":
        AFTER["fault"] = "bad output"
    else:
        AFTER["fault"] = "raise"


#: step -> (what the first attempt's rows say in ``failure``, rows of attempt 1, attempts).
STEPS = {
    "pricing": ("pricing failed: RuntimeError: injected pricing fault", 1, [1]),
    # An answer we cannot read is not retried: the same answer would fail again, paid again.
    "reading the answer": ("stage attempt 1 failed: openai API error (HTTP 200)", 1, [1]),
    "validating the answer": (None, 1, [1]),
    "budget accounting": ("stage attempt 1 failed", 1, [1, 2]),
    # An invalid output is not retried (the engine's validation errors never are).
    "stage output validation": (
        "stage attempt 1 failed: Invalid output of stage 'ask': text",
        1,
        [1],
    ),
    "after the stage's call": ("stage attempt 1 failed: RuntimeError: injected", 1, [1, 2]),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_fault_after_the_answer_keeps_the_row_and_marks_it(
    step: str,
    ledger_kit: tuple[TestKit, Ledger],
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kit, ledger = ledger_kit
    _inject(step, monkeypatch)
    failure, first_rows, attempts = STEPS[step]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownPriceWarning)
        run_id, status = run(kit)
    failing = {"stage output validation", "reading the answer"}
    assert status == (Status.FAILED if step in failing else Status.COMPLETED)
    rows: list[LedgerEntry] = ledger.entries(run_id)
    # Every answered request has its row: none lost, none made up.
    assert len(rows) == chat_calls(fake_llm)
    assert sorted({r.attempt for r in rows}) == attempts
    first = [r for r in rows if r.attempt == 1]
    last = [r for r in rows if r.attempt == attempts[-1]]
    if step == "validating the answer":
        # The invalid-looking first answer is recorded as such; the repair call succeeded.
        assert [r.status for r in rows] == ["error", "ok"]
        assert rows[0].error is not None and "injected validating the answer fault" in rows[0].error
        return
    assert len(first) == first_rows
    assert failure is not None and all(r.failure and failure in r.failure for r in first), [
        r.failure for r in first
    ]
    if step == "pricing":
        assert first[0].cost is None and first[0].status == "ok"
        return
    if step not in failing:
        assert all(r.failure is None and r.cost is not None for r in last)
    if step == "reading the answer":
        assert first[0].status == "error" and "injected reading the answer fault" in (
            first[0].error or ""
        )
        assert "could not read the answer" in (first[0].error or "")
    else:
        assert first[0].status == "ok"
    # The row keeps what the answer used and cost, whatever failed after it.
    assert first[0].input_tokens > 0 and first[0].output_tokens > 0
    assert first[0].cost is not None and first[0].cost > 0


def test_the_provider_extras_bring_the_price_catalogue() -> None:
    """``pip install 'airflow-workflow-engine[openai]'`` (or ``[google]``) prices its calls."""
    from pathlib import Path

    import tomllib

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for extra in ("openai", "google"):
        assert any(req.startswith("genai-prices") for req in extras[extra]), extra


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_an_unreadable_answer_keeps_its_tokens_and_cost(
    provider: str, fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both SDKs: an answer that cannot be read is still one row with its usage and cost."""
    from airflow_workflow_engine.ai import create_ai_helper
    from airflow_workflow_engine.ai.errors import AnswerReadError
    from airflow_workflow_engine.ai.providers.google import GoogleAdapter

    adapter: Any = OpenAIAdapter if provider == "openai" else GoogleAdapter
    monkeypatch.setattr(adapter, "_response", once(adapter._response, "reading the answer"))
    fake_llm.script("four", usage={"input_tokens": 1000, "output_tokens": 10})
    ledger = InMemoryLedger()
    helper = create_ai_helper(
        "unreadable",
        ledger,
        providers={
            "openai": ProviderSettings(
                api_key="sk-test-0123456789", base_url=fake_llm.openai_base_url
            ),
            "google": ProviderSettings(api_key="g-test-0123456", base_url=fake_llm.gemini_base_url),
        },
    )
    model = MODEL if provider == "openai" else "google:gemini-2.5-flash"
    with pytest.raises(AnswerReadError, match="could not read the answer: RuntimeError"):
        helper.generate_text(model, "what is 2+2")
    [row] = ledger.entries()
    assert (row.status, row.input_tokens, row.output_tokens) == ("error", 1000, 10)
    assert row.cost is not None and row.cost > 0


def test_an_answer_that_cannot_be_described_still_leaves_its_row(
    fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt policy (or anything else building the row) failing after the answer: the row
    is written without the texts, saying what failed, and the call returns its answer."""
    from airflow_workflow_engine.ai import create_ai_helper

    monkeypatch.setattr(
        recorder_module,
        "apply_prompt_policy",
        once(recorder_module.apply_prompt_policy, "prompt policy"),
    )
    ledger = InMemoryLedger()
    helper = create_ai_helper(
        "undescribable",
        ledger,
        providers={
            "openai": ProviderSettings(
                api_key="sk-test-0123456789", base_url=fake_llm.openai_base_url
            )
        },
    )
    result = helper.generate_text(MODEL, "what is 2+2")
    assert result.text
    [row] = ledger.entries()
    assert row.failure == "recording the answer failed: RuntimeError: injected prompt policy fault"
    assert (row.status, row.prompt, row.response) == ("ok", None, None)
    assert row.cost is not None and row.cost > 0
