"""The fake LLM server, driven by the real ``openai`` and ``google-genai`` SDKs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.fake_llm_fixtures import fake_llm

__all__ = ["fake_llm"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "score": {"type": "integer", "minimum": 3},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["a", "b"]},
        "ok": {"type": "boolean"},
    },
    "required": ["title", "score"],
}


@pytest.fixture
def oai(fake_llm: FakeLLMServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=fake_llm.openai_base_url, api_key="test", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def gem(fake_llm: FakeLLMServer) -> genai.Client:
    options = types.HttpOptions(base_url=fake_llm.gemini_base_url)
    return genai.Client(api_key="test", http_options=options)


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------- OpenAI


def test_openai_text_defaults_to_echo_with_usage(
    fake_llm: FakeLLMServer, oai: openai.OpenAI
) -> None:
    response = oai.chat.completions.create(model="gpt-4o-mini", messages=_user("hello there"))

    assert response.choices[0].message.content == "echo: hello there"
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "gpt-4o-mini"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2, 3)
    [request] = fake_llm.requests_to("/chat/completions")
    assert request.method == "POST"
    assert request.json["messages"] == _user("hello there")
    assert request.headers["authorization"] == "Bearer test"


def test_openai_scripted_text_usage_and_cost(fake_llm: FakeLLMServer, oai: openai.OpenAI) -> None:
    fake_llm.script(
        "scripted",
        usage={"input_tokens": 100, "output_tokens": 7, "cached_tokens": 40, "cost": 0.5},
    )
    response = oai.chat.completions.create(model="m", messages=_user("x"))

    assert response.choices[0].message.content == "scripted"
    usage = response.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (100, 7)
    assert usage.prompt_tokens_details.cached_tokens == 40
    assert (usage.model_extra or {})["cost"] == 0.5
    # The queue is consumed: the next call is unscripted again.
    again = oai.chat.completions.create(model="m", messages=_user("x"))
    assert again.choices[0].message.content == "echo: x"


def test_openai_structured_output_follows_schema(
    fake_llm: FakeLLMServer, oai: openai.OpenAI
) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "doc", "schema": SCHEMA}}
    response = oai.chat.completions.create(model="m", messages=_user("x"), response_format=fmt)
    value = json.loads(response.choices[0].message.content or "")
    assert value == {
        "title": "mock title",
        "score": 3,
        "tags": ["mock tags"],
        "kind": "a",
        "ok": True,
    }

    fake_llm.script(json={"title": "T", "score": 9})
    response = oai.chat.completions.create(model="m", messages=_user("x"), response_format=fmt)
    assert json.loads(response.choices[0].message.content or "") == {"title": "T", "score": 9}


def test_openai_max_tokens_truncates_with_length_finish(oai: openai.OpenAI) -> None:
    response = oai.chat.completions.create(
        model="m", messages=_user("one two three four"), max_completion_tokens=2
    )
    assert response.choices[0].message.content == "echo: one"
    assert response.choices[0].finish_reason == "length"


def test_openai_streaming_with_final_usage_chunk(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m",
        messages=_user("a b c d e f g"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: a b c d e f g"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_embeddings_are_deterministic_and_honour_dimensions(oai: openai.OpenAI) -> None:
    first = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=8)
    second = oai.embeddings.create(
        model="text-embedding-3-small", input="a", dimensions=8, encoding_format="float"
    )
    assert [len(d.embedding) for d in first.data] == [8, 8]
    assert first.data[0].embedding == pytest.approx(second.data[0].embedding, rel=1e-6)
    assert first.data[0].embedding != first.data[1].embedding
    assert first.usage.prompt_tokens == 2
    default = oai.embeddings.create(model="text-embedding-3-small", input="a")
    assert len(default.data[0].embedding) == 1536


def test_openai_429_has_retry_after_and_error_body(
    fake_llm: FakeLLMServer, oai: openai.OpenAI
) -> None:
    fake_llm.fail_next(429, retry_after=2)
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="m", messages=_user("x"))
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.response.headers["retry-after-ms"] == "2000"
    assert info.value.code == "rate_limit_exceeded"
    # Only one failure was queued.
    oai.chat.completions.create(model="m", messages=_user("x"))


def test_openai_500_times_and_endpoint_filter(fake_llm: FakeLLMServer, oai: openai.OpenAI) -> None:
    fake_llm.fail_next(500, times=2, endpoint="chat/completions")
    oai.embeddings.create(model="e", input="not affected")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model="m", messages=_user("x"))
    oai.chat.completions.create(model="m", messages=_user("x"))


def test_missing_api_key_is_401(fake_llm: FakeLLMServer) -> None:
    # The SDK refuses to send a request without a key, so this one is hand-made.
    raw = urllib.request.Request(
        f"{fake_llm.openai_base_url}/chat/completions",
        data=json.dumps({"model": "m", "messages": _user("x")}).encode(),
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(raw)
    assert info.value.code == 401
    assert json.loads(info.value.read())["error"]["code"] == "invalid_api_key"


def _batch_lines(*ids: str) -> bytes:
    lines = [
        {
            "custom_id": rid,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": _user(f"q {rid}")},
        }
        for rid in ids
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def test_openai_batch_lifecycle_with_files(fake_llm: FakeLLMServer, oai: openai.OpenAI) -> None:
    fake_llm.batch_polls_until_done = 2
    fake_llm.fail_batch_items("r3", message="bad request line")
    upload = oai.files.create(file=("in.jsonl", _batch_lines("r1", "r2", "r3")), purpose="batch")
    assert upload.purpose == "batch"
    assert oai.files.retrieve(upload.id).bytes == len(_batch_lines("r1", "r2", "r3"))

    batch = oai.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"idem": "k1"},
    )
    assert batch.status == "validating"
    assert fake_llm.batches_created == {"openai": 1, "google": 0}
    assert [oai.batches.retrieve(batch.id).status for _ in range(2)] == ["in_progress"] * 2
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert done.metadata == {"idem": "k1"}

    assert done.output_file_id is not None and done.error_file_id is not None
    output = [json.loads(x) for x in oai.files.content(done.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in output] == ["r1", "r2"]
    body = output[0]["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "echo: q r1"
    assert body["usage"]["prompt_tokens"] == 2
    errors = [json.loads(x) for x in oai.files.content(done.error_file_id).text.splitlines()]
    assert errors[0]["custom_id"] == "r3"
    assert errors[0]["response"]["body"]["error"]["message"] == "bad request line"

    listed = list(oai.batches.list(limit=10))
    assert [b.id for b in listed] == [batch.id]


def test_openai_batch_cancel_and_failure(fake_llm: FakeLLMServer, oai: openai.OpenAI) -> None:
    fake_llm.batch_polls_until_done = 5
    upload = oai.files.create(file=("in.jsonl", _batch_lines("r1")), purpose="batch")
    batch = oai.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert oai.batches.cancel(batch.id).status == "cancelling"
    assert oai.batches.retrieve(batch.id).status == "cancelled"

    fake_llm.batch_polls_until_done = 0
    fake_llm.batch_outcome = "failed"
    failing = oai.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    result = oai.batches.retrieve(failing.id)
    assert result.status == "failed"
    assert result.errors is not None and result.errors.data
    assert result.output_file_id is None
    # Newest first, paged with `after` like the real API.
    assert [b.id for b in oai.batches.list(limit=1)] == [failing.id, batch.id]


def test_openai_batch_rejects_unknown_file(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )


# ----------------------------------------------------------------------------- Gemini


def test_gemini_text_with_usage_metadata(fake_llm: FakeLLMServer, gem: genai.Client) -> None:
    fake_llm.script(
        "hi!", usage={"input_tokens": 12, "output_tokens": 2, "cached_tokens": 5}, provider="google"
    )
    config = types.GenerateContentConfig(system_instruction="be brief", temperature=0.1)
    response = gem.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config)

    assert response.text == "hi!"
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (12, 2)
    assert usage.cached_content_token_count == 5
    assert response.model_version == "gemini-2.5-flash"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    [request] = fake_llm.requests_to(":generateContent")
    assert request.provider == "google"
    assert request.json["systemInstruction"]["parts"][0]["text"] == "be brief"
    assert request.headers["x-goog-api-key"] == "test"


def test_gemini_default_echo_and_provider_queues(
    fake_llm: FakeLLMServer, gem: genai.Client
) -> None:
    fake_llm.script("for openai", provider="openai")
    response = gem.models.generate_content(model="gemini-2.5-flash", contents="ping")
    assert response.text == "echo: ping"
    fake_llm.script("shared")
    assert gem.models.generate_content(model="g", contents="ping").text == "shared"


@pytest.mark.parametrize("key", ["response_json_schema", "response_schema"])
def test_gemini_structured_output(gem: genai.Client, key: str) -> None:
    schema: Any = SCHEMA
    if key == "response_schema":
        schema = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}
    config = types.GenerateContentConfig(response_mime_type="application/json", **{key: schema})
    response = gem.models.generate_content(model="g", contents="x", config=config)
    value = json.loads(response.text or "")
    assert value == ({"n": 1} if key == "response_schema" else {**value, "score": 3})


def test_gemini_streaming(gem: genai.Client) -> None:
    chunks = list(gem.models.generate_content_stream(model="g", contents="a b c d e f"))
    assert "".join(c.text or "" for c in chunks) == "echo: a b c d e f"
    assert len(chunks) > 1
    final = chunks[-1].usage_metadata
    assert final is not None and final.candidates_token_count == 7


def test_gemini_embeddings(fake_llm: FakeLLMServer, gem: genai.Client) -> None:
    config = types.EmbedContentConfig(output_dimensionality=16)
    response = gem.models.embed_content(
        model="gemini-embedding-001", contents=["a", "b"], config=config
    )
    assert response.embeddings is not None
    assert [len(e.values or []) for e in response.embeddings] == [16, 16]
    [request] = fake_llm.requests_to(":batchEmbedContents")
    assert request.json["requests"][0]["outputDimensionality"] == 16
    # `:embedContent` (one content) as the REST API defines it.
    raw = urllib.request.Request(
        f"{fake_llm.gemini_base_url}/v1beta/models/text-embedding-004:embedContent",
        data=json.dumps(
            {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 16}
        ).encode(),
        headers={"x-goog-api-key": "test", "content-type": "application/json"},
    )
    with urllib.request.urlopen(raw) as reply:
        single = json.loads(reply.read())
    assert single["embedding"]["values"] == pytest.approx(response.embeddings[0].values)


def test_gemini_429_with_retry_after_and_500(fake_llm: FakeLLMServer, gem: genai.Client) -> None:
    fake_llm.fail_next(429, retry_after=1.5, provider="google")
    with pytest.raises(genai_errors.ClientError) as info:
        gem.models.generate_content(model="g", contents="x")
    assert info.value.code == 429
    assert info.value.status == "RESOURCE_EXHAUSTED"
    assert info.value.response.headers["retry-after"] == "1.5"
    assert info.value.details["error"]["details"][0]["retryDelay"] == "1.5s"

    fake_llm.fail_next(500, provider="google")
    with pytest.raises(genai_errors.ServerError) as server_info:
        gem.models.generate_content(model="g", contents="x")
    assert server_info.value.code == 500


def _inlined(*keys: str) -> list[Any]:
    return [
        {"contents": [{"role": "user", "parts": [{"text": f"q {k}"}]}], "metadata": {"key": k}}
        for k in keys
    ]


def test_gemini_batch_lifecycle(fake_llm: FakeLLMServer, gem: genai.Client) -> None:
    fake_llm.batch_polls_until_done = 1
    fake_llm.fail_batch_items("k2")
    job = gem.batches.create(
        model="gemini-2.5-flash", src=_inlined("k1", "k2"), config={"display_name": "dn-1"}
    )
    assert job.name is not None and job.name.startswith("batches/")
    assert job.display_name == "dn-1"
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert fake_llm.batches_created == {"openai": 0, "google": 1}

    assert gem.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    done = gem.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.dest is not None and done.dest.inlined_responses is not None
    first, second = done.dest.inlined_responses
    assert first.metadata == {"key": "k1"}
    assert first.response is not None and first.response.text == "echo: q k1"
    assert second.error is not None and second.response is None

    assert [j.display_name for j in gem.batches.list(config={"page_size": 10})] == ["dn-1"]


def test_gemini_batch_cancel_and_list_pages(fake_llm: FakeLLMServer, gem: genai.Client) -> None:
    fake_llm.batch_polls_until_done = 3
    jobs = [
        gem.batches.create(model="g", src=_inlined("k"), config={"display_name": f"d{i}"})
        for i in range(3)
    ]
    gem.batches.cancel(name=jobs[0].name or "")
    assert gem.batches.get(name=jobs[0].name or "").state == types.JobState.JOB_STATE_CANCELLED
    names = [j.display_name for j in gem.batches.list(config={"page_size": 2})]
    assert names == ["d2", "d1", "d0"]


# ----------------------------------------------------------------------------- server


def test_reset_and_unknown_route(fake_llm: FakeLLMServer, oai: openai.OpenAI) -> None:
    fake_llm.script("x", times=3)
    fake_llm.fail_next(500)
    fake_llm.reset()
    assert (
        oai.chat.completions.create(model="m", messages=_user("y")).choices[0].message.content
        == "echo: y"
    )
    assert len(fake_llm.requests) == 1
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4o")


def test_concurrent_requests_are_all_served(fake_llm: FakeLLMServer, oai: openai.OpenAI) -> None:
    fake_llm.script("scripted", times=10)

    def call(i: int) -> str:
        response = oai.chat.completions.create(model="m", messages=_user(f"n{i}"))
        return response.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(30)))
    assert answers.count("scripted") == 10
    assert len(fake_llm.requests) == 30


def test_context_manager_stops_server() -> None:
    with FakeLLMServer() as server:
        url = server.url
    with pytest.raises(RuntimeError):
        _ = server.url
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/v1/models", timeout=1)
