"""A deterministic, offline provider (``mock:echo``, or any model id): no network, no keys.

Example DAGs and the demo run on it. Answers are ``"echo: <last user message>"``; with a JSON
schema, a schema-shaped object (see :func:`~airflow_workflow_engine.ai.deterministic.
example_from_schema`); embeddings are hash-derived unit vectors; token counts are word counts.
Batches complete after ``batch_polls_until_done`` status polls. They live in a process-wide
store (any ``MockAdapter`` in the process can re-attach), or, with ``state_dir``, in JSON files
there so that a batch submitted by a worker can be polled from the triggerer's process.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_workflow_engine.ai.deterministic import (
    count_tokens,
    echo_text,
    example_from_schema,
    hash_embedding,
)
from airflow_workflow_engine.ai.errors import ProviderError, TransientProviderError
from airflow_workflow_engine.ai.providers.base import (
    BatchHandle,
    BatchItemResult,
    BatchRequest,
    BatchState,
    BatchStatus,
    ChatMessage,
    EmbeddingResponse,
    Messages,
    ProviderResponse,
    StreamChunk,
    check_batch_requests,
    idempotency_tag,
    split_system,
)

__all__ = ["MockAdapter", "clear_mock_batches"]

DEFAULT_EMBEDDING_DIMENSIONS = 16

_STORE: dict[str, dict[str, Any]] = {}
_STORE_LOCK = threading.Lock()


class MockAdapter:
    """:class:`~airflow_workflow_engine.ai.providers.base.ProviderAdapter` that never leaves
    the process.

    Args:
        batch_polls_until_done: ``batch_status`` calls that answer "running" before a batch
            completes.
        state_dir: keep batches in JSON files under this directory (shared across processes).
    """

    def __init__(
        self,
        *,
        batch_polls_until_done: int = 1,
        state_dir: str | Path | None = None,
        provider_name: str = "mock",
    ) -> None:
        self._name = provider_name
        self._polls_until_done = batch_polls_until_done
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._failures: deque[ProviderError] = deque()
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []  # (method, model_id), for tests

    @property
    def name(self) -> str:
        return self._name

    def fail_next(
        self, times: int = 1, *, status: int = 429, retry_after: float | None = None
    ) -> None:
        """Makes the next ``times`` calls raise, to exercise retries offline: a
        :class:`TransientProviderError` for 429/5xx, a :class:`ProviderError` otherwise."""
        kind = TransientProviderError if status == 429 or status >= 500 else ProviderError
        with self._lock:
            for _ in range(times):
                self._failures.append(
                    kind(self._name, status, f"injected mock failure ({status})", retry_after)
                )

    def _enter(self, method: str, model_id: str) -> None:
        with self._lock:
            self.calls.append((method, model_id))
            if self._failures:
                raise self._failures.popleft()

    # ------------------------------------------------------------------ text

    def generate(
        self,
        model_id: str,
        messages: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ProviderResponse:
        self._enter("generate", model_id)
        system_text, conversation = split_system(messages, system)
        return self._answer(model_id, system_text, conversation, max_tokens, json_schema)

    def stream(
        self,
        model_id: str,
        messages: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Iterator[StreamChunk]:
        self._enter("stream", model_id)
        system_text, conversation = split_system(messages, system)
        answer = self._answer(model_id, system_text, conversation, max_tokens, json_schema)
        return _stream(answer)

    def _answer(
        self,
        model_id: str,
        system: str | None,
        conversation: Sequence[ChatMessage],
        max_tokens: int | None,
        json_schema: Mapping[str, Any] | None,
    ) -> ProviderResponse:
        users = [m.content for m in conversation if m.role == "user"]
        prompt = users[-1] if users else conversation[-1].content
        parsed = None
        if json_schema is not None:
            parsed = example_from_schema(json_schema, seed=prompt)
            text = json.dumps(parsed)
        else:
            text = echo_text(prompt)
        finish = "stop"
        words = text.split(" ")
        if json_schema is None and max_tokens is not None and len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
        all_text = " ".join([system or "", *(m.content for m in conversation)])
        digest = hashlib.sha256(f"{model_id}\x00{all_text}".encode()).hexdigest()[:16]
        return ProviderResponse(
            provider=self._name,
            model_id=model_id,
            text=text,
            parsed=parsed,
            input_tokens=max(count_tokens(all_text), 1),
            output_tokens=count_tokens(text),
            finish_reason=finish,
            response_id=f"mock-{digest}",
        )

    # ------------------------------------------------------------------ embeddings

    def embed(
        self, model_id: str, texts: Sequence[str], *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        self._enter("embed", model_id)
        dims = dimensions or DEFAULT_EMBEDDING_DIMENSIONS
        return EmbeddingResponse(
            provider=self._name,
            model_id=model_id,
            vectors=[hash_embedding(t, dims) for t in texts],
            input_tokens=sum(max(count_tokens(t), 1) for t in texts),
        )

    # ------------------------------------------------------------------ batches

    def batch_submit(
        self, model_id: str, requests: Sequence[BatchRequest], *, idempotency_key: str
    ) -> BatchHandle:
        self._enter("batch_submit", model_id)
        ids = check_batch_requests(requests)
        existing = self.batch_find(idempotency_key)
        if existing is not None:
            record = self._load(existing.batch_id)
            if record["state"] not in ("failed", "cancelled", "expired"):
                return existing
        results = []
        for request in requests:
            system_text, conversation = split_system(request.chat_messages(), request.system)
            answer = self._answer(
                model_id, system_text, conversation, request.max_tokens, request.json_schema
            )
            results.append(
                BatchItemResult(
                    id=request.id,
                    ok=True,
                    text=answer.text,
                    parsed=answer.parsed,
                    input_tokens=answer.input_tokens,
                    output_tokens=answer.output_tokens,
                ).model_dump(mode="json")
            )
        now = datetime.now(timezone.utc)
        record = {
            "batch_id": f"mockbatch-{uuid.uuid4().hex[:16]}",
            "model_id": model_id,
            "tag": idempotency_tag(idempotency_key),
            "idempotency_key": idempotency_key,
            "request_ids": list(ids),
            "submitted_at": now.isoformat(),
            "polls": 0,
            "polls_until_done": self._polls_until_done,
            "state": "pending",
            "results": results,
        }
        self._save(record)
        return _handle(self._name, record)

    def batch_find(self, idempotency_key: str) -> BatchHandle | None:
        tag = idempotency_tag(idempotency_key)
        matches = [r for r in self._records() if r["tag"] == tag]
        if not matches:
            return None
        return _handle(self._name, max(matches, key=lambda r: str(r["submitted_at"])))

    def batch_status(self, handle: BatchHandle) -> BatchStatus:
        with _STORE_LOCK:
            record = self._load(handle.batch_id)
            if record["state"] in ("pending", "running"):
                record["polls"] += 1
                done = record["polls"] > record["polls_until_done"]
                record["state"] = "completed" if done else "running"
                self._save(record, locked=True)
        return _status(record)

    def batch_results(self, handle: BatchHandle) -> list[BatchItemResult]:
        record = self._load(handle.batch_id)
        if record["state"] != "completed":
            raise ProviderError(
                self._name,
                None,
                f"batch {handle.batch_id} is {record['state']}: results can be read once "
                "batch_status() reports completed.",
                reached_provider=True,
            )
        return [BatchItemResult.model_validate(r) for r in record["results"]]

    def batch_cancel(self, handle: BatchHandle) -> BatchStatus:
        with _STORE_LOCK:
            record = self._load(handle.batch_id)
            if record["state"] in ("pending", "running"):
                record["state"] = "cancelled"
                self._save(record, locked=True)
        return _status(record)

    # ------------------------------------------------------------------ storage

    def _path(self, batch_id: str) -> Path:
        assert self._state_dir is not None
        return self._state_dir / f"{batch_id}.json"

    def _load(self, batch_id: str) -> dict[str, Any]:
        if self._state_dir is None:
            record = _STORE.get(batch_id)
        else:
            path = self._path(batch_id)
            record = json.loads(path.read_text()) if path.exists() else None
        if record is None:
            raise ProviderError(self._name, 404, f"mock batch {batch_id} not found")
        return record

    def _save(self, record: dict[str, Any], *, locked: bool = False) -> None:
        if self._state_dir is None:
            if locked:
                _STORE[record["batch_id"]] = record
            else:
                with _STORE_LOCK:
                    _STORE[record["batch_id"]] = record
            return
        self._state_dir.mkdir(parents=True, exist_ok=True)
        path = self._path(record["batch_id"])
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)  # atomic: a reader in another process never sees half a file

    def _records(self) -> list[dict[str, Any]]:
        if self._state_dir is None:
            with _STORE_LOCK:
                return list(_STORE.values())
        if not self._state_dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self._state_dir.glob("*.json"))]


def clear_mock_batches() -> None:
    """Forgets the process-wide in-memory batches (test isolation; ``state_dir`` is untouched)."""
    with _STORE_LOCK:
        _STORE.clear()


def _stream(answer: ProviderResponse) -> Iterator[StreamChunk]:
    words = answer.text.split(" ")
    for start in range(0, len(words), 3):
        piece = " ".join(words[start : start + 3])
        yield StreamChunk(delta=piece + (" " if start + 3 < len(words) else ""))
    yield StreamChunk(final=answer)


def _handle(provider: str, record: Mapping[str, Any]) -> BatchHandle:
    return BatchHandle(
        provider=provider,
        model_id=record["model_id"],
        batch_id=record["batch_id"],
        request_ids=tuple(record["request_ids"]),
        submitted_at=datetime.fromisoformat(record["submitted_at"]),
        idempotency_key=record["idempotency_key"],
    )


def _status(record: Mapping[str, Any]) -> BatchStatus:
    total = len(record["request_ids"])
    state = BatchState(record["state"])
    return BatchStatus(
        state=state,
        total=total,
        completed=total if state is BatchState.COMPLETED else 0,
        provider_state=record["state"],
    )
