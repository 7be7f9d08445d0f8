"""OpenAIAdapter against the fake server, through the real ``openai`` SDK."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine.ai.errors import (
    ProviderConfigError,
    ProviderError,
    ProviderRetriesExhaustedError,
    TransientProviderError,
)
from airflow_workflow_engine.ai.providers import (
    BatchHandle,
    BatchRequest,
    BatchState,
    OpenAIAdapter,
    ProviderAdapter,
)
from airflow_workflow_engine.ai.retry import call_with_retries
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.fake_llm_fixtures import fake_llm, fake_llm_env

__all__ = ["fake_llm", "fake_llm_env"]


class Summary(BaseModel):
    title: str
    bullet_points: list[str]
    confidence: float


@pytest.fixture
def adapter(fake_llm: FakeLLMServer) -> OpenAIAdapter:
    return OpenAIAdapter(api_key="test-key", base_url=fake_llm.openai_base_url)


def test_satisfies_the_protocol(adapter: OpenAIAdapter) -> None:
    assert isinstance(adapter, ProviderAdapter)
    assert "test-key" not in repr(adapter)


def test_generate_text(fake_llm: FakeLLMServer, adapter: OpenAIAdapter) -> None:
    response = adapter.generate(
        "gpt-4o-mini", "hello there", system="be brief", temperature=0.2, max_tokens=50
    )
    assert response.text == "echo: hello there"
    assert response.parsed is None
    assert (response.provider, response.model_id, response.finish_reason) == (
        "openai",
        "gpt-4o-mini",
        "stop",
    )
    assert (response.input_tokens, response.output_tokens) == (4, 3)
    [request] = fake_llm.requests_to("chat/completions")
    assert request.json["messages"][0] == {"role": "system", "content": "be brief"}
    assert request.json["temperature"] == 0.2
    # Not OpenAI's own host, so the widely supported field name is used.
    assert request.json["max_tokens"] == 50


def test_usage_cached_tokens_and_reported_cost(
    fake_llm: FakeLLMServer, adapter: OpenAIAdapter
) -> None:
    fake_llm.script(
        "cached",
        usage={
            "input_tokens": 1000,
            "output_tokens": 20,
            "cached_tokens": 800,
            "reasoning_tokens": 5,
            "cost": 0.0123,
        },
    )
    response = adapter.generate("gpt-4o-mini", [{"role": "user", "content": "x"}])
    assert (response.input_tokens, response.output_tokens) == (1000, 20)
    assert (response.cached_tokens, response.reasoning_tokens) == (800, 5)
    assert response.reported_cost == pytest.approx(0.0123)


def test_structured_output(fake_llm: FakeLLMServer, adapter: OpenAIAdapter) -> None:
    schema = Summary.model_json_schema()
    response = adapter.generate("gpt-4o-mini", "summarise", json_schema=schema)
    summary = Summary.model_validate(response.parsed)
    assert summary.title == "mock title"
    fmt = fake_llm.requests_to("chat/completions")[-1].json["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Summary"
    assert fmt["json_schema"]["strict"] is False  # pydantic's schema is not closed

    closed = {**schema, "additionalProperties": False}
    fake_llm.script(json={"title": "T", "bullet_points": ["a"], "confidence": 0.9})
    response = adapter.generate("gpt-4o-mini", "summarise", json_schema=closed)
    assert Summary.model_validate(response.parsed).title == "T"
    assert fake_llm.requests_to("chat/completions")[-1].json["response_format"]["json_schema"][
        "strict"
    ]


def test_official_host_uses_max_completion_tokens() -> None:
    adapter = OpenAIAdapter(api_key="k")
    params = adapter._chat_params(
        "gpt-5", "x", system=None, temperature=None, max_tokens=10, json_schema=None
    )
    assert params["max_completion_tokens"] == 10 and "max_tokens" not in params


def test_stream(adapter: OpenAIAdapter) -> None:
    chunks = list(adapter.stream("gpt-4o-mini", "one two three four five six"))
    deltas = [c.delta for c in chunks if c.final is None]
    assert len(deltas) > 1 and "".join(deltas) == "echo: one two three four five six"
    final = chunks[-1].final
    assert final is not None
    assert final.text == "echo: one two three four five six"
    assert (final.input_tokens, final.output_tokens, final.finish_reason) == (6, 7, "stop")


def test_stream_errors_surface_when_the_stream_starts(
    fake_llm: FakeLLMServer, adapter: OpenAIAdapter
) -> None:
    fake_llm.fail_next(503)
    with pytest.raises(TransientProviderError):
        adapter.stream("gpt-4o-mini", "x")


def test_embeddings(fake_llm: FakeLLMServer, adapter: OpenAIAdapter) -> None:
    response = adapter.embed("text-embedding-3-small", ["alpha", "beta gamma"], dimensions=12)
    assert [len(v) for v in response.vectors] == [12, 12]
    assert response.input_tokens == 3
    assert response.vectors[0] == pytest.approx(
        adapter.embed("text-embedding-3-small", ["alpha"], dimensions=12).vectors[0], rel=1e-6
    )
    assert fake_llm.requests_to("/embeddings")[0].json["dimensions"] == 12


def test_429_then_success_honours_retry_after(
    fake_llm: FakeLLMServer, adapter: OpenAIAdapter
) -> None:
    fake_llm.fail_next(429, retry_after=2)
    sleeps: list[float] = []
    attempts: list[tuple[int, Any]] = []
    response = call_with_retries(
        lambda: adapter.generate("gpt-4o-mini", "x"),
        sleep=sleeps.append,
        on_attempt=lambda n, exc, _latency: attempts.append((n, exc)),
    )
    assert response.text == "echo: x"
    assert sleeps == [2.0]
    assert [n for n, _ in attempts] == [1, 2]
    first_error = attempts[0][1]
    assert isinstance(first_error, TransientProviderError)
    assert (first_error.status, first_error.retry_after) == (429, 2.0)
    assert attempts[1][1] is None
    assert len(fake_llm.requests_to("chat/completions")) == 2  # the SDK itself did not retry


def test_500_exhausts_retries_with_a_clear_error(
    fake_llm: FakeLLMServer, adapter: OpenAIAdapter
) -> None:
    fake_llm.fail_next(500, times=10)
    sleeps: list[float] = []
    with pytest.raises(ProviderRetriesExhaustedError) as info:
        call_with_retries(
            lambda: adapter.generate("gpt-4o-mini", "x"), max_attempts=3, sleep=sleeps.append
        )
    message = str(info.value)
    assert message.startswith("openai API error (HTTP 500): gave up after 3 attempts")
    assert "The server had an error" in message
    assert len(sleeps) == 2 and len(fake_llm.requests_to("chat/completions")) == 3


def test_client_errors_are_not_transient_and_hide_keys(
    fake_llm: FakeLLMServer, adapter: OpenAIAdapter
) -> None:
    fake_llm.fail_next(401, message="Incorrect API key provided: sk-live-abcdefgh12345678.")
    with pytest.raises(ProviderError) as info:
        adapter.generate("gpt-4o-mini", "x")
    assert not isinstance(info.value, TransientProviderError)
    assert info.value.status == 401
    assert "sk-live-abcdefgh12345678" not in str(info.value)
    assert "test-key" not in str(info.value)


def test_connection_refused_is_transient_and_did_not_reach_the_provider() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = OpenAIAdapter(api_key="k", base_url=f"http://127.0.0.1:{port}/v1", timeout=5)
    with pytest.raises(TransientProviderError) as info:
        adapter.generate("gpt-4o-mini", "x")
    assert info.value.status is None and not info.value.reached_provider


def test_credentials_from_environment(
    fake_llm_env: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert OpenAIAdapter().generate("gpt-4o-mini", "env").text == "echo: env"
    auth = fake_llm_env.requests_to("chat/completions")[0].headers["authorization"]
    assert auth == "Bearer test-openai-key"
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ProviderConfigError, match="OPENAI_API_KEY"):
        OpenAIAdapter()


def _requests() -> list[BatchRequest]:
    return [
        BatchRequest(id="r1", prompt="first", max_tokens=20),
        BatchRequest(id="r2", prompt="second", json_schema=Summary.model_json_schema()),
        BatchRequest(id="r3", prompt="third", system="sys"),
    ]


def test_batch_lifecycle(fake_llm: FakeLLMServer, adapter: OpenAIAdapter) -> None:
    fake_llm.batch_polls_until_done = 2
    fake_llm.fail_batch_items("r3", message="invalid request")
    handle = adapter.batch_submit("gpt-4o-mini", _requests(), idempotency_key="run-7/summarise")
    assert (handle.provider, handle.model_id, handle.request_ids) == (
        "openai",
        "gpt-4o-mini",
        ("r1", "r2", "r3"),
    )
    handle = BatchHandle.model_validate_json(handle.model_dump_json())  # as stored by a trigger
    upload = fake_llm.requests_to("/files", method="POST")[0]
    assert b'"custom_id": "r2"' in upload.body and b"json_schema" in upload.body

    with pytest.raises(ProviderError, match="still in_progress: results can be read once"):
        adapter.batch_results(handle)
    assert adapter.batch_status(handle).state is BatchState.RUNNING
    status = adapter.batch_status(handle)
    assert (status.state, status.total, status.completed, status.failed) == (
        BatchState.COMPLETED,
        3,
        2,
        1,
    )

    first, second, third = adapter.batch_results(handle)
    assert (first.id, first.ok, first.text) == ("r1", True, "echo: first")
    assert first.input_tokens == 1 and first.output_tokens == 2
    assert Summary.model_validate(second.parsed).title == "mock title"
    assert (third.id, third.ok, third.error) == ("r3", False, "invalid request")


def test_batch_find_reattaches_and_submit_is_idempotent(
    fake_llm: FakeLLMServer, adapter: OpenAIAdapter
) -> None:
    assert adapter.batch_find("run-8/stage") is None
    handle = adapter.batch_submit("gpt-4o-mini", _requests(), idempotency_key="run-8/stage")
    adapter.batch_submit("gpt-4o-mini", _requests(), idempotency_key="other-key")

    # A new adapter (e.g. after a worker crash) finds the batch, with its request ids.
    fresh = OpenAIAdapter(api_key="test-key", base_url=fake_llm.openai_base_url)
    found = fresh.batch_find("run-8/stage")
    assert found is not None
    assert (found.batch_id, found.request_ids, found.model_id) == (
        handle.batch_id,
        handle.request_ids,
        "gpt-4o-mini",
    )
    again = fresh.batch_submit("gpt-4o-mini", _requests(), idempotency_key="run-8/stage")
    assert again.batch_id == handle.batch_id
    assert fake_llm.batches_created["openai"] == 2


def test_batch_cancel_then_resubmit(fake_llm: FakeLLMServer, adapter: OpenAIAdapter) -> None:
    fake_llm.batch_polls_until_done = 5
    handle = adapter.batch_submit("gpt-4o-mini", _requests(), idempotency_key="cancel-me")
    cancelling = adapter.batch_cancel(handle)
    assert (cancelling.state, cancelling.provider_state) == (BatchState.RUNNING, "cancelling")
    assert adapter.batch_status(handle).state is BatchState.CANCELLED
    results = adapter.batch_results(handle)
    assert [r.ok for r in results] == [False, False, False]
    assert results[0].error == "no result for this request (batch cancelled)"
    # A cancelled batch is not re-used: submitting again under the key creates a new one.
    fresh = adapter.batch_submit("gpt-4o-mini", _requests(), idempotency_key="cancel-me")
    assert fresh.batch_id != handle.batch_id


def test_failed_batch_reports_the_error(fake_llm: FakeLLMServer, adapter: OpenAIAdapter) -> None:
    fake_llm.batch_polls_until_done = 0
    fake_llm.batch_outcome = "failed"
    handle = adapter.batch_submit("gpt-4o-mini", _requests(), idempotency_key="fails")
    status = adapter.batch_status(handle)
    assert (status.state, status.error) == (BatchState.FAILED, "The batch failed (scripted).")
