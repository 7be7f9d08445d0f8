"""The fake's model of the world: what a test scripts (answers, failures, batch lifecycles),
what it received, and the files and batches it holds; shared by both providers' routes.

Everything here is guarded by the server's lock (the routes run under it)."""

from __future__ import annotations

import itertools
import json as jsonlib
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Provider = Literal["openai", "google"]
BatchOutcome = Literal["completed", "failed", "expired"]
PROVIDERS: tuple[Provider, ...] = ("openai", "google")
#: A batch in one of these states no longer moves.
FINAL_STATES = ("completed", "failed", "expired", "cancelled")

UNSET: Any = object()


# ----------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received (``json`` is ``None`` when the body was not JSON)."""

    provider: str
    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class ScriptedResponse:
    """The next model answer. ``usage`` keys: input_tokens, output_tokens, cached_tokens,
    reasoning_tokens, cost (OpenAI-compatible ``usage.cost``)."""

    text: str | None = None
    json: Any = UNSET
    usage: Mapping[str, float] | None = None
    finish_reason: str | None = None


# ----------------------------------------------------------------------------- internal state


@dataclass
class Failure:
    status: int
    retry_after: float | None
    message: str | None
    endpoint: str | None
    remaining: int


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: float | None
    finish_reason: str  # neutral: stop | length | content_filter | raw


@dataclass
class File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int


@dataclass
class BatchItem:
    key: str
    completion: Completion | None
    error: str | None
    model: str
    embedding: dict[str, Any] | None = None  # OpenAI /v1/embeddings lines


@dataclass
class Batch:
    provider: Provider
    id: str
    model: str
    items: list[BatchItem]
    polls_until_done: int
    outcome: BatchOutcome
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None
    input_file_id: str = ""
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"
    polls: int = 0
    cancel_requested: bool = False
    state: str = "pending"  # pending | running | completed | failed | expired | cancelled
    finished_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


def must(value: Completion | None) -> Completion:
    assert value is not None
    return value


class FakeState:
    """Scripts, failures, the request log, files and batches.

    ``reset`` forgets all of them but keeps the batch settings and the id counter (ids stay
    unique over a server's life)."""

    def __init__(self, *, batch_polls_until_done: int, batch_outcome: BatchOutcome) -> None:
        self.batch_polls_until_done = batch_polls_until_done
        self.batch_outcome: BatchOutcome = batch_outcome
        self._ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.scripts: dict[str, deque[ScriptedResponse]] = {
            "openai": deque(),
            "google": deque(),
            "shared": deque(),
        }
        self.failures: dict[str, deque[Failure]] = {
            "openai": deque(),
            "google": deque(),
            "shared": deque(),
        }
        self.failing_items: dict[str, dict[str, str]] = {"openai": {}, "google": {}}
        self.requests: list[RecordedRequest] = []
        self.files: dict[str, File] = {}
        self.batches: dict[str, Batch] = {}
        self.batches_created: dict[str, int] = {"openai": 0, "google": 0}
        self.server_errors: list[str] = []

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def take_failure(self, provider: str, path: str) -> Failure | None:
        """The injected failure that applies to this request, if any (counted down)."""
        for queue_name in (provider, "shared"):
            queue = self.failures[queue_name]
            for failure in queue:
                if failure.endpoint is None or failure.endpoint in path:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        queue.remove(failure)
                    return failure
        return None

    def complete(
        self,
        provider: Provider,
        prompt: str,
        all_text: str,
        *,
        want_json: bool,
        schema: Mapping[str, Any] | None,
        max_tokens: int | None,
    ) -> Completion:
        """One model answer: the next scripted one, else a deterministic default."""
        scripted = self.scripts[provider].popleft() if self.scripts[provider] else None
        if scripted is None and self.scripts["shared"]:
            scripted = self.scripts["shared"].popleft()
        scripted = scripted or ScriptedResponse()
        from airflow_workflow_engine.ai import deterministic

        if scripted.json is not UNSET:
            text = jsonlib.dumps(scripted.json)
        elif scripted.text is not None:
            text = scripted.text
        elif want_json:
            value = deterministic.example_from_schema(schema, seed=prompt) if schema else None
            text = jsonlib.dumps(value if schema else {"text": deterministic.echo_text(prompt)})
        else:
            text = deterministic.echo_text(prompt)
        finish = scripted.finish_reason or "stop"
        words = text.split(" ")
        if scripted.finish_reason is None and max_tokens is not None and len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
        usage = dict(scripted.usage or {})
        cost = usage.get("cost")
        return Completion(
            text=text,
            input_tokens=int(
                usage.get("input_tokens", max(deterministic.count_tokens(all_text), 1))
            ),
            output_tokens=int(usage.get("output_tokens", deterministic.count_tokens(text))),
            cached_tokens=int(usage.get("cached_tokens", 0)),
            reasoning_tokens=int(usage.get("reasoning_tokens", 0)),
            cost=None if cost is None else float(cost),
            finish_reason=finish,
        )

    def new_batch(self, provider: Provider, batch_id: str, model: str, **fields: Any) -> Batch:
        """Registers a batch that follows the current lifecycle settings."""
        batch = Batch(
            provider=provider,
            id=batch_id,
            model=model,
            polls_until_done=self.batch_polls_until_done,
            outcome=self.batch_outcome,
            created_at=int(time.time()),
            **fields,
        )
        self.batches[batch.id] = batch
        self.batches_created[provider] += 1
        return batch

    @staticmethod
    def advance(batch: Batch) -> bool:
        """A status poll: counts it and moves the batch along its scripted lifecycle; returns
        whether the batch has just finished."""
        if batch.state in FINAL_STATES:
            return False
        batch.polls += 1
        if batch.cancel_requested:
            batch.state = "cancelled"
        elif batch.polls > batch.polls_until_done:
            batch.state = batch.outcome
        else:
            batch.state = "running"
            return False
        batch.finished_at = int(time.time())
        return True
