"""The deterministic mock provider, and the shared value types it returns."""

from __future__ import annotations

import enum
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from airflow_workflow_engine.ai.errors import ProviderError, TransientProviderError
from airflow_workflow_engine.ai.providers import (
    BatchHandle,
    BatchRequest,
    BatchState,
    MockAdapter,
    ProviderAdapter,
)
from airflow_workflow_engine.ai.providers.base import (
    ChatMessage,
    idempotency_tag,
    parse_json_text,
    split_system,
    to_messages,
)
from airflow_workflow_engine.ai.providers.mock import clear_mock_batches
from airflow_workflow_engine.ai.retry import call_with_retries


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Author(BaseModel):
    name: str
    email: str = Field(pattern=r".+@.+")


class Review(BaseModel):
    title: str = Field(min_length=20)
    stars: int = Field(ge=1, le=5)
    ratio: float = Field(gt=0, lt=1)
    colour: Colour
    mood: Literal["happy", "sad"]
    tags: list[str] = Field(min_length=2)
    author: Author
    reviewers: list[Author]
    published: date
    updated: datetime
    code: str = Field(pattern=r"^[0-9]+$")
    note: str | None = None
    flags: dict[str, bool] = {}


def test_mock_satisfies_the_protocol() -> None:
    assert isinstance(MockAdapter(), ProviderAdapter)


def test_generate_echoes_and_counts_words() -> None:
    response = MockAdapter().generate(
        "echo", [{"role": "user", "content": "hello big world"}], system="be kind"
    )
    assert response.text == "echo: hello big world"
    assert (response.input_tokens, response.output_tokens) == (5, 4)
    assert (response.provider, response.model_id, response.finish_reason) == (
        "mock",
        "echo",
        "stop",
    )
    again = MockAdapter().generate("echo", "hello big world", system="be kind")
    assert again == response


def test_structured_output_validates_against_pydantic_model() -> None:
    schema = Review.model_json_schema()
    response = MockAdapter().generate("echo", "review this", json_schema=schema)
    review = Review.model_validate(response.parsed)
    assert review.stars == 1 and review.colour is Colour.RED and len(review.tags) == 2
    assert Review.model_validate_json(response.text) == review


def test_max_tokens_truncates_text() -> None:
    response = MockAdapter().generate("echo", "a b c d", max_tokens=2)
    assert (response.text, response.finish_reason) == ("echo: a", "length")


def test_stream_yields_deltas_then_final() -> None:
    chunks = list(MockAdapter().stream("echo", "one two three four five"))
    assert "".join(c.delta for c in chunks) == "echo: one two three four five"
    final = chunks[-1].final
    assert final is not None and final.output_tokens == 6
    assert all(c.final is None for c in chunks[:-1])


def test_embeddings_are_deterministic_unit_vectors() -> None:
    adapter = MockAdapter()
    first = adapter.embed("embed", ["a", "b"], dimensions=32)
    assert [len(v) for v in first.vectors] == [32, 32]
    assert first.vectors[0] == adapter.embed("embed", ["a"], dimensions=32).vectors[0]
    assert sum(x * x for x in first.vectors[0]) == pytest.approx(1.0)
    assert len(adapter.embed("embed", ["a"]).vectors[0]) == 16


def test_fail_next_exercises_retries_offline() -> None:
    adapter = MockAdapter()
    adapter.fail_next(2, status=503)
    sleeps: list[float] = []
    response = call_with_retries(lambda: adapter.generate("echo", "x"), sleep=sleeps.append)
    assert response.text == "echo: x" and len(sleeps) == 2
    adapter.fail_next(status=400)
    with pytest.raises(ProviderError) as info:
        adapter.generate("echo", "x")
    assert not isinstance(info.value, TransientProviderError)


def _requests() -> list[BatchRequest]:
    return [
        BatchRequest(id="a", prompt="first"),
        BatchRequest(
            id="b",
            messages=(ChatMessage(role="user", content="second"),),
            json_schema=Author.model_json_schema(),
        ),
    ]


def test_batch_lifecycle_and_reattach(tmp_path: Path) -> None:
    adapter = MockAdapter(batch_polls_until_done=2, state_dir=tmp_path)
    handle = adapter.batch_submit("echo", _requests(), idempotency_key="run-1/stage")
    assert handle.request_ids == ("a", "b")
    with pytest.raises(ProviderError, match="pending"):
        adapter.batch_results(handle)

    # Another adapter (another process, with the same state_dir) re-attaches.
    other = MockAdapter(state_dir=tmp_path)
    assert other.batch_find("run-1/stage") == handle
    assert other.batch_submit("echo", _requests(), idempotency_key="run-1/stage") == handle
    assert len(list(tmp_path.glob("*.json"))) == 1

    states = [adapter.batch_status(handle).state for _ in range(3)]
    assert states == [BatchState.RUNNING, BatchState.RUNNING, BatchState.COMPLETED]
    status = other.batch_status(handle)
    assert (status.total, status.completed, status.is_terminal) == (2, 2, True)

    first, second = other.batch_results(handle)
    assert (first.id, first.ok, first.text) == ("a", True, "echo: first")
    assert Author.model_validate(second.parsed).email == "user@example.com"


def test_batch_cancel_then_resubmit_creates_a_new_batch() -> None:
    adapter = MockAdapter(batch_polls_until_done=5)
    key = f"cancel-{id(adapter)}"
    handle = adapter.batch_submit("echo", _requests(), idempotency_key=key)
    assert adapter.batch_cancel(handle).state is BatchState.CANCELLED
    assert adapter.batch_status(handle).state is BatchState.CANCELLED
    fresh = adapter.batch_submit("echo", _requests(), idempotency_key=key)
    assert fresh.batch_id != handle.batch_id
    assert adapter.batch_find(key) == fresh
    clear_mock_batches()
    assert adapter.batch_find(key) is None


def test_batch_requests_are_validated() -> None:
    with pytest.raises(ValidationError, match="exactly one of prompt or messages"):
        BatchRequest(id="x")
    with pytest.raises(ValueError, match="repeated: a"):
        MockAdapter().batch_submit(
            "echo", [BatchRequest(id="a", prompt="p")] * 2, idempotency_key="k"
        )
    with pytest.raises(ValueError, match="at least one request"):
        MockAdapter().batch_submit("echo", [], idempotency_key="k")


def test_batch_handle_round_trips_as_json() -> None:
    handle = BatchHandle(
        provider="openai",
        model_id="gpt-4o-mini",
        batch_id="batch_1",
        request_ids=("a", "b"),
        submitted_at=datetime(2024, 1, 1, 12, 0),
        idempotency_key="k",
    )
    assert BatchHandle.model_validate_json(handle.model_dump_json()) == handle
    assert BatchHandle.model_validate(handle.model_dump(mode="json")) == handle


def test_message_helpers() -> None:
    assert to_messages("hi") == [ChatMessage(role="user", content="hi")]
    system, rest = split_system(
        [{"role": "system", "content": "s2"}, {"role": "user", "content": "u"}], "s1"
    )
    assert (system, [m.content for m in rest]) == ("s1\n\ns2", ["u"])
    with pytest.raises(ValueError, match="at least one user"):
        split_system([{"role": "system", "content": "only"}], None)
    with pytest.raises(ValidationError):
        to_messages([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="must not be empty"):
        to_messages([])


def test_parse_json_text_and_tags() -> None:
    assert parse_json_text('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_text("[1, 2]") == [1, 2]
    assert parse_json_text("42") is None
    assert parse_json_text("{broken") is None
    assert idempotency_tag("run/1") == "awe-run/1"
    assert idempotency_tag("x" * 300).startswith("awe-sha256-")
