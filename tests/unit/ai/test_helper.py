"""The AI helper with the real openai and google-genai SDKs against the fake LLM server.

Prices are registered by hand (``register_model``), so every expected cost below is computed
from the scripted token counts: rows and roll-ups must match to the cent (and beyond).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, Field

from airflow_workflow_engine.ai import (
    InMemoryLedger,
    Ledger,
    ProviderSettings,
    RetryPolicy,
    create_ai_helper,
    register_model,
    unregister_model,
)
from airflow_workflow_engine.ai.errors import ProviderRetriesExhaustedError
from airflow_workflow_engine.ai.helper import AIHelper
from airflow_workflow_engine.ai.models import UnknownModelError
from airflow_workflow_engine.ai.prompts import PromptPolicy
from airflow_workflow_engine.errors import BudgetExceededError, ModelOutputError
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.backends import BACKENDS, backend_params
from tests.fake_llm_fixtures import fake_llm

__all__ = ["fake_llm"]

OPENAI_KEY = "sk-test-SECRET-openai-0123456789"
GEMINI_KEY = "AIzaTestSecretGeminiKey0123456789abcdef"
OPENAI = "openai:gpt-test"
GOOGLE = "google:gemini-test"
MODELS = [pytest.param(OPENAI, id="openai"), pytest.param(GOOGLE, id="google")]
#: USD per million tokens: (input, output, cached input).
PRICES = {OPENAI: (2, 8, Decimal("0.5")), GOOGLE: (1, 4, Decimal("0.25"))}
USAGE = {"input_tokens": 1000, "output_tokens": 250, "cached_tokens": 400}


def expected_cost(model: str, inp: int, out: int, cached: int = 0) -> Decimal:
    i, o, c = PRICES[model]
    return (Decimal(inp - cached) * i + Decimal(cached) * c + Decimal(out) * o) / 10**6


@pytest.fixture(autouse=True)
def _prices() -> Iterator[None]:
    for key, (i, o, c) in PRICES.items():
        register_model(key, input_per_mtok=i, output_per_mtok=o, cached_input_per_mtok=c)
    register_model("openai:embed-test", input_per_mtok=Decimal("0.02"), output_per_mtok=0)
    register_model("google:embed-test", input_per_mtok=Decimal("0.15"), output_per_mtok=0)
    yield
    for key in [*PRICES, "openai:embed-test", "google:embed-test"]:
        unregister_model(key)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_helper(
    fake: FakeLLMServer,
    ledger: Ledger,
    sleeps: list[float],
    *,
    prompt_policy: PromptPolicy = "store",
    **kwargs: Any,
) -> AIHelper:
    return create_ai_helper(
        "workflow.run-1.stage.summarize",
        ledger,
        providers={
            "openai": ProviderSettings(api_key=OPENAI_KEY, base_url=fake.openai_base_url),
            "google": ProviderSettings(api_key=GEMINI_KEY, base_url=fake.gemini_base_url),
        },
        prompt_policy=prompt_policy,
        run_id="run-1",
        stage_id="summarize",
        attempt=1,
        retry=RetryPolicy(sleep=sleeps.append, rng=random.Random(7)),
        **kwargs,
    )


@pytest.fixture
def ledger() -> InMemoryLedger:
    return InMemoryLedger()


@pytest.fixture
def helper(fake_llm: FakeLLMServer, ledger: InMemoryLedger, sleeps: list[float]) -> AIHelper:
    return make_helper(fake_llm, ledger, sleeps)


@pytest.fixture(params=backend_params())
def any_ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A ledger of every backend: in memory, SQLite, PostgreSQL."""
    if request.param == "memory":
        yield InMemoryLedger()
        return
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    with BACKENDS[request.param](request) as store:
        yield SqlLedger(store.engine)


class Summary(BaseModel):
    title: str
    points: list[str] = Field(min_length=1)


# ----------------------------------------------------------------------------- text


@pytest.mark.parametrize("model", MODELS)
def test_generate_text_returns_usage_and_cost_and_records_one_row(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger, model: str
) -> None:
    fake_llm.script("A short answer.", usage=USAGE)
    result = helper.generate_text(model, "Summarize this.", system="Be brief.", max_tokens=100)
    cost = expected_cost(model, 1000, 250, 400)
    assert result.text == "A short answer."
    assert (result.input_tokens, result.output_tokens, result.cached_tokens) == (1000, 250, 400)
    assert (result.cost, result.cost_source) == (cost, "estimated")
    assert result.model == model and result.model_id == model.split(":")[1]
    [row] = ledger.entries("run-1")
    assert row.model_dump(
        include={
            "topic",
            "call_type",
            "provider",
            "model_key",
            "status",
            "workflow_run_id",
            "stage_id",
            "attempt",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "cost",
        }
    ) == {
        "topic": "workflow.run-1.stage.summarize",
        "call_type": "text",
        "provider": model.split(":", maxsplit=1)[0],
        "model_key": model,
        "status": "ok",
        "workflow_run_id": "run-1",
        "stage_id": "summarize",
        "attempt": 1,
        "input_tokens": 1000,
        "output_tokens": 250,
        "cached_tokens": 400,
        "cost": cost,
    }
    assert row.prompt == "system: Be brief.\n\nuser: Summarize this."
    assert row.response == "A short answer."
    assert row.prompt_hash == hashlib.sha256(row.prompt.encode()).hexdigest()
    assert row.latency_ms is not None and row.latency_ms >= 0


def test_generate_text_takes_a_conversation(fake_llm: FakeLLMServer, helper: AIHelper) -> None:
    result = helper.generate_text(
        OPENAI,
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ],
        temperature=0.1,
    )
    assert result.text == "echo: second"
    [request] = fake_llm.requests_to("chat/completions")
    assert [m["role"] for m in request.json["messages"]] == ["system", "user", "assistant", "user"]
    assert request.json["temperature"] == 0.1


def test_reported_cost_is_stored_as_reported(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger
) -> None:
    fake_llm.script("x", usage={**USAGE, "cost": 0.0421})
    result = helper.generate_text(OPENAI, "hi")
    assert (result.cost, result.cost_source) == (Decimal("0.0421"), "reported")
    assert ledger.entries()[0].cost_source == "reported"


def test_unknown_model_or_provider_is_an_error_not_a_fallback(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger
) -> None:
    with pytest.raises(UnknownModelError, match="'<provider>:<model>'"):
        helper.generate_text("gpt-5-mini", "hi")
    with pytest.raises(UnknownModelError, match="Unknown model provider 'anthropic'"):
        helper.generate_text("anthropic:claude-sonnet", "hi")
    assert fake_llm.requests == [] and ledger.entries() == []


def test_unpriced_model_records_tokens_with_unknown_cost(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger
) -> None:
    fake_llm.script("x", usage={"input_tokens": 12, "output_tokens": 3})
    with pytest.warns(UserWarning, match="No price known for model 'openai:private-model-7'"):
        result = helper.generate_text("openai:private-model-7", "hi")
    assert (result.cost, result.input_tokens) == (None, 12)
    [row] = ledger.entries()
    assert (row.cost, row.cost_source, row.input_tokens) == (None, None, 12)


# ----------------------------------------------------------------------------- objects


@pytest.mark.parametrize("model", MODELS)
def test_generate_object_valid(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger, model: str
) -> None:
    fake_llm.script(json={"title": "T", "points": ["a", "b"]}, usage=USAGE)
    result = helper.generate_object(model, "Summarize", Summary)
    assert result.object == Summary(title="T", points=["a", "b"])
    assert result.calls == 1
    assert result.cost == expected_cost(model, 1000, 250, 400)
    [row] = ledger.entries()
    assert (row.call_type, row.status) == ("object", "ok")
    # Native structured output: the schema went to the provider.
    request = fake_llm.requests[-1].json
    if model == OPENAI:
        assert request["response_format"]["json_schema"]["schema"]["title"] == "Summary"
    else:
        assert request["generationConfig"]["responseMimeType"] == "application/json"


@pytest.mark.parametrize("model", MODELS)
def test_generate_object_is_repaired_once_with_the_validation_error(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger, model: str
) -> None:
    fake_llm.script(
        json={"title": "T", "points": []}, usage={"input_tokens": 100, "output_tokens": 10}
    )
    fake_llm.script(
        json={"title": "T", "points": ["ok"]}, usage={"input_tokens": 150, "output_tokens": 12}
    )
    result = helper.generate_object(model, "Summarize", Summary)
    assert result.object.points == ["ok"]
    assert result.calls == 2
    assert (result.input_tokens, result.output_tokens) == (250, 22)
    assert result.cost == expected_cost(model, 100, 10) + expected_cost(model, 150, 12)
    first, second = ledger.entries()
    assert (first.status, second.status) == ("error", "ok")
    assert first.error is not None and first.error.startswith("invalid output: points:")
    assert first.cost == expected_cost(model, 100, 10)
    # The second request carried the bad answer and the validation error.
    assert "did not match the required JSON schema: points:" in json.dumps(
        fake_llm.requests[-1].json
    )


def test_generate_object_invalid_twice_raises_quoting_the_error(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger
) -> None:
    fake_llm.script(json={"title": 1}, times=2)
    with pytest.raises(ModelOutputError) as info:
        helper.generate_object(OPENAI, "Summarize", Summary)
    message = str(info.value)
    assert "did not return a valid Summary" in message
    assert "title: Input should be a valid string" in message
    assert "points: Field required" in message
    assert not info.value.retryable
    rows = ledger.entries()
    assert [r.status for r in rows] == ["error", "error"]
    assert all(r.call_type == "object" and r.error and "invalid output" in r.error for r in rows)


def test_generate_object_not_json(fake_llm: FakeLLMServer, helper: AIHelper) -> None:
    fake_llm.script("I cannot do that.", times=2)
    with pytest.raises(ModelOutputError, match=r'not JSON: "I cannot do that\."'):
        helper.generate_object(GOOGLE, "Summarize", Summary)


# ----------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_embed(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger, provider: str
) -> None:
    result = helper.embed(f"{provider}:embed-test", ["first text here", "second"], dimensions=8)
    assert len(result.vectors) == 2 and all(len(v) == 8 for v in result.vectors)
    assert result.input_tokens == 4  # the fake counts words
    price = Decimal("0.02") if provider == "openai" else Decimal("0.15")
    assert result.cost == 4 * price / 10**6
    [row] = ledger.entries()
    assert (row.call_type, row.output_tokens) == ("embed", 0)
    assert row.prompt == '["first text here", "second"]'
    assert row.response == "2 vectors of 8 dimensions"


def test_embed_rejects_empty_input(helper: AIHelper) -> None:
    with pytest.raises(ValueError, match="non-empty list of strings"):
        helper.embed(OPENAI, [])


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("model", MODELS)
def test_stream_text_records_the_call_once_at_the_end(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger, model: str
) -> None:
    fake_llm.script("one two three four five six seven", usage=USAGE)
    stream = helper.stream_text(model, "count")
    chunks = list(stream)
    assert "".join(chunks) == "one two three four five six seven"
    assert stream.result is not None
    assert stream.result.cost == expected_cost(model, 1000, 250, 400)
    [row] = ledger.entries()
    assert (row.call_type, row.status, row.output_tokens) == ("stream", "ok", 250)
    assert row.response == "one two three four five six seven"
    list(stream)  # reading again records nothing
    assert len(ledger.entries()) == 1


def test_abandoned_stream_is_recorded_once_without_made_up_usage(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger
) -> None:
    fake_llm.script("one two three four five six seven eight nine", usage=USAGE)
    with helper.stream_text(OPENAI, "count") as stream:
        first = next(stream)
        assert ledger.entries() == []
    assert first
    [row] = ledger.entries()
    assert row.status == "error" and row.error is not None
    assert "abandoned by the caller" in row.error
    assert (row.input_tokens, row.output_tokens, row.cost) == (0, 0, None)
    assert stream.result is None
    stream.close()
    assert len(ledger.entries()) == 1


def test_stream_dropped_without_close_is_recorded(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger
) -> None:
    stream = helper.stream_text(GOOGLE, "count")
    del stream
    [row] = ledger.entries()
    assert row.call_type == "stream" and "abandoned" in (row.error or "")


def test_stream_start_is_retried(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger, sleeps: list[float]
) -> None:
    fake_llm.fail_next(429, retry_after=0.5)
    assert helper.stream_text(OPENAI, "a b").read().text == "echo: a b"
    assert sleeps == [0.5]
    assert [r.status for r in ledger.entries()] == ["error", "ok"]


# ----------------------------------------------------------------------------- retries


@pytest.mark.parametrize("model", MODELS)
def test_429_then_success_backs_off_as_told_and_records_both_attempts(
    fake_llm: FakeLLMServer,
    helper: AIHelper,
    ledger: InMemoryLedger,
    sleeps: list[float],
    model: str,
) -> None:
    fake_llm.fail_next(429, retry_after=1.5)
    fake_llm.script("finally", usage={"input_tokens": 10, "output_tokens": 2})
    result = helper.generate_text(model, "hi")
    assert result.text == "finally"
    assert sleeps == [1.5]  # Retry-After honoured
    failed, ok = ledger.entries()
    assert failed.status == "error" and failed.error is not None
    assert failed.error.startswith("attempt 1: ") and "HTTP 429" in failed.error
    assert (failed.input_tokens, failed.cost) == (0, None)
    assert (ok.status, ok.cost) == ("ok", expected_cost(model, 10, 2))


def test_429_without_retry_after_uses_exponential_backoff_with_jitter(
    fake_llm: FakeLLMServer, helper: AIHelper, sleeps: list[float]
) -> None:
    fake_llm.fail_next(429, times=3)
    helper.generate_text(OPENAI, "hi")
    assert len(sleeps) == 3
    for number, delay in enumerate(sleeps, start=1):
        ceiling = 0.5 * 2 ** (number - 1)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize("model", MODELS)
def test_500_exhausting_retries_raises_a_clear_error(
    fake_llm: FakeLLMServer,
    helper: AIHelper,
    ledger: InMemoryLedger,
    sleeps: list[float],
    model: str,
) -> None:
    fake_llm.fail_next(500, times=4)
    with pytest.raises(ProviderRetriesExhaustedError) as info:
        helper.generate_text(model, "hi")
    assert "HTTP 500" in str(info.value) and "gave up after 4 attempts" in str(info.value)
    assert info.value.retryable  # Airflow's own task retry may still succeed later
    assert len(sleeps) == 3
    rows = ledger.entries()
    assert [r.error.split(":")[0] for r in rows if r.error] == [
        "attempt 1",
        "attempt 2",
        "attempt 3",
        "attempt 4",
    ]
    assert all(r.status == "error" and r.cost is None for r in rows)


def test_calls_that_never_reached_the_provider_leave_no_row(
    ledger: InMemoryLedger, sleeps: list[float]
) -> None:
    helper = create_ai_helper(
        "t",
        ledger,
        providers={
            "openai": ProviderSettings(api_key=OPENAI_KEY, base_url="http://127.0.0.1:9/v1")
        },
        retry=RetryPolicy(max_attempts=2, sleep=sleeps.append),
    )
    with pytest.raises(ProviderRetriesExhaustedError, match="connection error"):
        helper.generate_text(OPENAI, "hi")
    assert ledger.entries() == []


def test_non_transient_errors_are_not_retried(
    fake_llm: FakeLLMServer, helper: AIHelper, ledger: InMemoryLedger, sleeps: list[float]
) -> None:
    fake_llm.fail_next(400, message="bad request: unsupported parameter")
    with pytest.raises(Exception, match="unsupported parameter"):
        helper.generate_text(OPENAI, "hi")
    assert sleeps == []
    [row] = ledger.entries()
    assert "HTTP 400" in (row.error or "")


# ----------------------------------------------------------------------------- budgets


def test_budget_exceeded_before_the_call(
    fake_llm: FakeLLMServer, ledger: InMemoryLedger, sleeps: list[float]
) -> None:
    helper = make_helper(fake_llm, ledger, sleeps, budget=Decimal("0.003"))
    fake_llm.script("x", usage=USAGE)  # 0.0034: crosses the budget; allowed to complete
    helper.generate_text(OPENAI, "first")
    requests = len(fake_llm.requests)
    with pytest.raises(BudgetExceededError) as info:
        helper.generate_text(OPENAI, "second")
    message = str(info.value)
    assert "run 'run-1' has spent $0.0034 of its $0.003 budget" in message
    assert "openai:gpt-test was not made" in message
    assert "ledger.rollup(group_by=('stage_id', 'model_key'), workflow_run_id='run-1')" in message
    assert "FROM wfe_ai_calls WHERE workflow_run_id = 'run-1'" in message
    assert not info.value.retryable
    assert len(fake_llm.requests) == requests  # nothing was sent
    assert len(ledger.entries()) == 1


# ----------------------------------------------------------------------------- ledger backends


def test_rows_and_rollups_exact_on_every_ledger(
    fake_llm: FakeLLMServer, any_ledger: Ledger, sleeps: list[float]
) -> None:
    helper = make_helper(fake_llm, any_ledger, sleeps)
    fake_llm.script("a", usage={"input_tokens": 1234, "output_tokens": 567, "cached_tokens": 89})
    fake_llm.script("b", usage={"input_tokens": 1000, "output_tokens": 1000})
    fake_llm.fail_next(429, retry_after=0)
    fake_llm.script("c", usage={"input_tokens": 333, "output_tokens": 77})
    helper.generate_text(OPENAI, "one")
    helper.generate_text(GOOGLE, "two")
    helper.generate_text(OPENAI, "three")
    openai_cost = expected_cost(OPENAI, 1234, 567, 89) + expected_cost(OPENAI, 333, 77)
    google_cost = expected_cost(GOOGLE, 1000, 1000)
    # (1145*2 + 89*0.5 + 567*8 + 333*2 + 77*8) / 1e6 = 0.0081525; (1000*1 + 1000*4) / 1e6 = 0.005
    assert openai_cost == Decimal("0.0081525") and google_cost == Decimal("0.005")
    assert any_ledger.totals("run-1") == (openai_cost + google_cost, 1234 + 567 + 2000 + 410)
    rows = any_ledger.rollup(("model",), workflow_run_id="run-1")
    assert [(r["model"], r.calls, r.errors, r.cost) for r in rows] == [
        (GOOGLE, 1, 0, google_cost),
        (OPENAI, 3, 1, openai_cost),
    ]
    assert round(rows[1].cost, 2) == Decimal("0.01")


@pytest.mark.parametrize("policy", ["hash", "none"])
def test_prompt_policy(
    fake_llm: FakeLLMServer, any_ledger: Ledger, sleeps: list[float], policy: PromptPolicy
) -> None:
    helper = make_helper(fake_llm, any_ledger, sleeps, prompt_policy=policy)
    helper.generate_text(OPENAI, "patient record 12345", system="classify")
    helper.generate_object(GOOGLE, "patient record 12345", Summary)
    helper.stream_text(OPENAI, "patient record 12345").read()
    helper.embed("openai:embed-test", ["patient record 12345"])
    rows = any_ledger.entries("run-1")
    assert len(rows) == 4
    for row in rows:
        assert row.prompt is None and row.response is None
        assert "12345" not in row.model_dump_json()
    hashes = [r.prompt_hash for r in rows]
    if policy == "none":
        assert hashes == [None] * 4
    else:
        expected = hashlib.sha256(b"system: classify\n\nuser: patient record 12345").hexdigest()
        assert hashes[0] == expected
        assert hashes[1] == hashes[2] == hashlib.sha256(b"user: patient record 12345").hexdigest()


def test_no_key_in_any_stored_row(
    fake_llm: FakeLLMServer,
    any_ledger: Ledger,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    helper = make_helper(fake_llm, any_ledger, sleeps)
    caplog.set_level("DEBUG")
    fake_llm.fail_next(429, retry_after=0)
    helper.generate_text(OPENAI, f"my key is {OPENAI_KEY}")
    fake_llm.fail_next(401, provider="google", message=f"API key not valid: {GEMINI_KEY}")
    with pytest.raises(Exception, match="HTTP 401"):
        helper.generate_text(GOOGLE, "hi")
    fake_llm.fail_next(500, times=4)
    with pytest.raises(ProviderRetriesExhaustedError):
        helper.embed("google:embed-test", ["x"])
    helper.stream_text(GOOGLE, "hello").read()
    rows = any_ledger.entries()
    assert len(rows) >= 8
    stored = "\n".join(r.model_dump_json() for r in rows)
    if hasattr(any_ledger, "engine"):  # the raw table too
        from sqlalchemy import text

        with any_ledger.engine.connect() as conn:
            stored += str(conn.execute(text("SELECT * FROM wfe_ai_calls")).all())
    for secret in (OPENAI_KEY, GEMINI_KEY):
        assert secret not in stored
        assert secret not in caplog.text
        assert secret not in repr(helper)
    assert "my key is ***" in stored  # a key pasted into a prompt is masked too


def test_importing_the_ai_package_imports_no_sdk_and_no_sqlalchemy() -> None:
    code = (
        "import sys\n"
        "import airflow_workflow_engine, airflow_workflow_engine.ai as ai\n"
        "from airflow_workflow_engine.testing import create_test_kernel\n"
        "from airflow_workflow_engine.ai import create_ai_helper, InMemoryLedger\n"
        "from airflow_workflow_engine.ai.batch_stage import define_ai_batch_stage\n"
        "h = create_ai_helper('t', InMemoryLedger())\n"
        "create_test_kernel([])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('openai', 'google', 'sqlalchemy', 'genai_prices')]\n"
        "assert not bad, bad\n"
        "h.generate_text('mock:echo', 'hi')\n"
        "assert 'openai' not in sys.modules and 'genai_prices' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class _BrokenLedger(InMemoryLedger):
    def record(self, entry: Any) -> None:
        raise RuntimeError("database is down")


def test_a_ledger_that_cannot_be_written_does_not_fail_the_paid_call(
    fake_llm: FakeLLMServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    helper = make_helper(fake_llm, _BrokenLedger(), sleeps)
    fake_llm.script("paid for", usage=USAGE)
    assert helper.generate_text(OPENAI, "hi").text == "paid for"
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "could not write the AI ledger row" in record.getMessage()
    assert '"input_tokens":1000' in record.getMessage()  # enough to reconcile from the log


def test_an_openai_compatible_gateway_is_its_own_provider(
    fake_llm: FakeLLMServer, ledger: InMemoryLedger
) -> None:
    helper = create_ai_helper(
        "t",
        ledger,
        providers={
            "gateway": {"kind": "openai", "base_url": fake_llm.openai_base_url, "api_key": "k-1234"}
        },
    )
    register_model("gateway:llama-3", input_per_mtok=1, output_per_mtok=1)
    try:
        fake_llm.script("hi", usage={"input_tokens": 10, "output_tokens": 10})
        result = helper.generate_text("gateway:llama-3", "hello")
    finally:
        unregister_model("gateway:llama-3")
    assert (result.provider, result.cost) == ("gateway", Decimal("0.00002"))
    [row] = ledger.entries()
    assert (row.provider, row.model_key, row.model_id) == ("gateway", "gateway:llama-3", "llama-3")
    with pytest.raises(ValueError, match="needs kind="):
        create_ai_helper("t", ledger, providers={"acme": {"base_url": "http://x"}})
