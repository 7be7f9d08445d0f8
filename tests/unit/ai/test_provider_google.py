"""GoogleAdapter against the fake server, through the real ``google-genai`` SDK."""

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
    GoogleAdapter,
    ProviderAdapter,
)
from airflow_workflow_engine.ai.retry import call_with_retries
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.fake_llm_fixtures import fake_llm, fake_llm_env

__all__ = ["fake_llm", "fake_llm_env"]

MODEL = "gemini-2.5-flash"


class Entity(BaseModel):
    name: str
    kind: str
    salience: float


class Entities(BaseModel):
    entities: list[Entity]
    language: str


@pytest.fixture
def adapter(fake_llm: FakeLLMServer) -> GoogleAdapter:
    return GoogleAdapter(api_key="test-key", base_url=fake_llm.gemini_base_url)


def test_satisfies_the_protocol(adapter: GoogleAdapter) -> None:
    assert isinstance(adapter, ProviderAdapter)
    assert "test-key" not in repr(adapter)


def test_generate_text_with_system_and_roles(
    fake_llm: FakeLLMServer, adapter: GoogleAdapter
) -> None:
    response = adapter.generate(
        MODEL,
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "how are you"},
        ],
        temperature=0.3,
        max_tokens=64,
    )
    assert response.text == "echo: how are you"
    assert (response.provider, response.model_id, response.finish_reason) == (
        "google",
        MODEL,
        "STOP",
    )
    assert response.input_tokens == 7 and response.output_tokens == 4
    body = fake_llm.requests_to(":generateContent")[0].json
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["systemInstruction"]["parts"][0]["text"] == "be brief"
    assert body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 64}


def test_usage_with_cached_and_thought_tokens(
    fake_llm: FakeLLMServer, adapter: GoogleAdapter
) -> None:
    fake_llm.script(
        "ok",
        usage={
            "input_tokens": 500,
            "output_tokens": 10,
            "cached_tokens": 300,
            "reasoning_tokens": 7,
        },
    )
    response = adapter.generate(MODEL, "x")
    assert (response.input_tokens, response.cached_tokens) == (500, 300)
    # Thoughts are billed as output: they are counted in output_tokens too.
    assert (response.output_tokens, response.reasoning_tokens) == (17, 7)


def test_structured_output(fake_llm: FakeLLMServer, adapter: GoogleAdapter) -> None:
    schema = Entities.model_json_schema()
    response = adapter.generate(MODEL, "find entities", json_schema=schema)
    parsed = Entities.model_validate(response.parsed)
    assert parsed.entities[0].name == "mock name"
    config = fake_llm.requests_to(":generateContent")[0].json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["$defs"]["Entity"]["properties"]["salience"]


def test_stream(adapter: GoogleAdapter) -> None:
    chunks = list(adapter.stream(MODEL, "a b c d e f g"))
    deltas = [c.delta for c in chunks if c.final is None]
    assert len(deltas) > 1 and "".join(deltas) == "echo: a b c d e f g"
    final = chunks[-1].final
    assert final is not None
    assert (final.text, final.output_tokens, final.finish_reason) == (
        "echo: a b c d e f g",
        8,
        "STOP",
    )


def test_stream_errors_surface_when_the_stream_starts(
    fake_llm: FakeLLMServer, adapter: GoogleAdapter
) -> None:
    fake_llm.fail_next(503, provider="google")
    with pytest.raises(TransientProviderError):
        adapter.stream(MODEL, "x")


def test_embeddings(fake_llm: FakeLLMServer, adapter: GoogleAdapter) -> None:
    response = adapter.embed("gemini-embedding-001", ["alpha", "beta gamma"], dimensions=24)
    assert [len(v) for v in response.vectors] == [24, 24]
    assert (response.input_tokens, response.tokens_estimated) == (3, False)
    request = fake_llm.requests_to(":batchEmbedContents")[0].json
    assert request["requests"][1]["outputDimensionality"] == 24


def test_429_then_success_honours_retry_after(
    fake_llm: FakeLLMServer, adapter: GoogleAdapter
) -> None:
    fake_llm.fail_next(429, retry_after=3, provider="google")
    sleeps: list[float] = []
    attempts: list[tuple[int, Any]] = []
    response = call_with_retries(
        lambda: adapter.generate(MODEL, "x"),
        sleep=sleeps.append,
        on_attempt=lambda n, exc, _latency: attempts.append((n, exc)),
    )
    assert response.text == "echo: x"
    assert sleeps == [3.0]
    error = attempts[0][1]
    assert isinstance(error, TransientProviderError)
    assert (error.status, error.retry_after) == (429, 3.0)
    assert "Rate limit reached" in str(error)
    assert len(fake_llm.requests_to(":generateContent")) == 2  # the SDK itself did not retry


def test_retry_delay_from_error_details_without_header() -> None:
    from google.genai import errors

    from airflow_workflow_engine.ai.providers.google import _map_error

    body = {
        "error": {
            "code": 429,
            "message": "quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}],
        }
    }
    mapped = _map_error(errors.ClientError(429, body), "google")
    assert isinstance(mapped, TransientProviderError) and mapped.retry_after == 17.0


def test_500_exhausts_retries_with_a_clear_error(
    fake_llm: FakeLLMServer, adapter: GoogleAdapter
) -> None:
    fake_llm.fail_next(500, times=10, provider="google")
    sleeps: list[float] = []
    with pytest.raises(ProviderRetriesExhaustedError) as info:
        call_with_retries(lambda: adapter.generate(MODEL, "x"), max_attempts=2, sleep=sleeps.append)
    assert str(info.value).startswith("google API error (HTTP 500): gave up after 2 attempts")
    assert len(sleeps) == 1


def test_client_errors_are_not_transient(fake_llm: FakeLLMServer, adapter: GoogleAdapter) -> None:
    fake_llm.fail_next(400, provider="google", message="* GenerationConfig: bad schema")
    with pytest.raises(ProviderError) as info:
        adapter.generate(MODEL, "x")
    assert not isinstance(info.value, TransientProviderError)
    assert info.value.status == 400 and "bad schema" in str(info.value)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = GoogleAdapter(api_key="k", base_url=f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(TransientProviderError) as info:
        adapter.generate(MODEL, "x")
    assert not info.value.reached_provider


def test_credentials_from_environment(
    fake_llm_env: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert GoogleAdapter().generate(MODEL, "env").text == "echo: env"
    headers = fake_llm_env.requests_to(":generateContent")[0].headers
    assert headers["x-goog-api-key"] == "test-gemini-key"
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", "fallback-key")
    GoogleAdapter().generate(MODEL, "env")
    assert fake_llm_env.requests[-1].headers["x-goog-api-key"] == "fallback-key"
    monkeypatch.delenv("GOOGLE_API_KEY")
    with pytest.raises(ProviderConfigError, match="GEMINI_API_KEY"):
        GoogleAdapter()


def _requests() -> list[BatchRequest]:
    return [
        BatchRequest(id="r1", prompt="first", temperature=0),
        BatchRequest(id="r2", prompt="second", json_schema=Entities.model_json_schema()),
        BatchRequest(id="r3", prompt="third", system="sys"),
    ]


def test_batch_lifecycle(fake_llm: FakeLLMServer, adapter: GoogleAdapter) -> None:
    fake_llm.batch_polls_until_done = 1
    fake_llm.fail_batch_items("r3", provider="google", message="blocked")
    handle = adapter.batch_submit(MODEL, _requests(), idempotency_key="run-3/extract")
    assert handle.batch_id.startswith("batches/")
    assert handle.request_ids == ("r1", "r2", "r3")
    handle = BatchHandle.model_validate_json(handle.model_dump_json())
    request = fake_llm.requests_to(":batchGenerateContent")[0].json["batch"]
    assert request["displayName"] == "awe-run-3/extract"
    inlined = request["inputConfig"]["requests"]["requests"]
    assert [r["metadata"]["key"] for r in inlined] == ["r1", "r2", "r3"]
    assert inlined[2]["request"]["systemInstruction"]["parts"][0]["text"] == "sys"

    with pytest.raises(ProviderError, match="JOB_STATE_RUNNING"):
        adapter.batch_results(handle)
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
    assert Entities.model_validate(second.parsed).language == "mock language"
    assert (third.ok, third.error) == (False, "blocked")


def test_batch_find_reattaches_and_submit_is_idempotent(
    fake_llm: FakeLLMServer, adapter: GoogleAdapter
) -> None:
    assert adapter.batch_find("run-4/stage") is None
    handle = adapter.batch_submit(MODEL, _requests(), idempotency_key="run-4/stage")
    adapter.batch_submit(MODEL, _requests(), idempotency_key="unrelated")

    fresh = GoogleAdapter(api_key="test-key", base_url=fake_llm.gemini_base_url)
    found = fresh.batch_find("run-4/stage")
    assert found is not None
    assert (found.batch_id, found.model_id, found.request_ids) == (handle.batch_id, MODEL, ())
    again = fresh.batch_submit(MODEL, _requests(), idempotency_key="run-4/stage")
    assert (again.batch_id, again.request_ids) == (handle.batch_id, handle.request_ids)
    assert fake_llm.batches_created["google"] == 2

    # Without request ids (re-attached by key only), results come back keyed by metadata.
    # (The re-attaching submit polled once already: the fake finishes on the next poll.)
    assert fresh.batch_status(found).state is BatchState.COMPLETED
    assert [r.id for r in fresh.batch_results(found)] == ["r1", "r2", "r3"]


def test_batch_cancel(fake_llm: FakeLLMServer, adapter: GoogleAdapter) -> None:
    fake_llm.batch_polls_until_done = 5
    handle = adapter.batch_submit(MODEL, _requests(), idempotency_key="cancel-me")
    status = adapter.batch_cancel(handle)
    assert (status.state, status.provider_state) == (BatchState.CANCELLED, "JOB_STATE_CANCELLED")
    assert fake_llm.requests_to(":cancel", method="POST")
    results = adapter.batch_results(handle)
    assert [r.error for r in results] == [
        "no result for this request (batch JOB_STATE_CANCELLED)"
    ] * 3
    fresh = adapter.batch_submit(MODEL, _requests(), idempotency_key="cancel-me")
    assert fresh.batch_id != handle.batch_id


def test_expired_batch(fake_llm: FakeLLMServer, adapter: GoogleAdapter) -> None:
    fake_llm.batch_polls_until_done = 0
    fake_llm.batch_outcome = "expired"
    handle = adapter.batch_submit(MODEL, _requests(), idempotency_key="too-slow")
    assert adapter.batch_status(handle).state is BatchState.EXPIRED
