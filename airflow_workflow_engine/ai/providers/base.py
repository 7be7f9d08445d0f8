"""The provider protocol and its typed values.

One small protocol (:class:`ProviderAdapter`) in front of every model API: the AI helper, the
ledger and the batch stages only see these types, never an SDK object. Token counts follow one
convention across providers: ``input_tokens`` includes ``cached_tokens``; ``output_tokens``
includes ``reasoning_tokens`` (both are billed as output).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BatchHandle",
    "BatchItemResult",
    "BatchRequest",
    "BatchState",
    "BatchStatus",
    "ChatMessage",
    "EmbeddingResponse",
    "MessageLike",
    "Messages",
    "ProviderAdapter",
    "ProviderResponse",
    "StreamChunk",
    "check_batch_requests",
    "idempotency_tag",
    "parse_json_text",
    "read_safely",
    "split_system",
    "to_messages",
]

Role = Literal["system", "user", "assistant"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatMessage(_Frozen):
    role: Role
    content: str


MessageLike = ChatMessage | Mapping[str, str]
#: A prompt string (one user message) or a conversation.
Messages = str | Sequence[MessageLike]


class ProviderResponse(_Frozen):
    """One model answer. ``parsed`` is the decoded JSON when a schema was requested."""

    provider: str
    model_id: str
    text: str
    parsed: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: Cost the endpoint itself reported (some OpenAI-compatible gateways do), else ``None``.
    reported_cost: float | None = None
    #: The provider's own finish reason, unmapped (``"stop"``, ``"length"``, ``"STOP"``, ...).
    finish_reason: str | None = None
    response_id: str | None = None


class StreamChunk(_Frozen):
    """A text delta; the last chunk has ``final`` set: the whole answer with its usage."""

    delta: str = ""
    final: ProviderResponse | None = None


class EmbeddingResponse(_Frozen):
    provider: str
    model_id: str
    vectors: list[list[float]]
    input_tokens: int = 0
    #: True when the provider reported no usage and ``input_tokens`` is our estimate.
    tokens_estimated: bool = False
    reported_cost: float | None = None


class BatchRequest(_Frozen):
    """One request of a batch: either ``prompt`` (a user message) or ``messages``."""

    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    system: str | None = None
    json_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    @model_validator(mode="after")
    def _one_input(self) -> BatchRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"batch request '{self.id}': give exactly one of prompt or messages")
        return self

    def chat_messages(self) -> list[ChatMessage]:
        if self.messages is not None:
            return list(self.messages)
        return [ChatMessage(role="user", content=self.prompt or "")]


class BatchHandle(_Frozen):
    """Enough to find a provider batch again, from any process: store it as JSON."""

    provider: str
    model_id: str
    batch_id: str
    #: Our request ids in submission order; empty when re-attached without knowing them.
    request_ids: tuple[str, ...] = ()
    submitted_at: datetime
    idempotency_key: str | None = None


class BatchState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self not in (BatchState.PENDING, BatchState.RUNNING)


class BatchStatus(_Frozen):
    state: BatchState
    total: int = 0
    completed: int = 0
    failed: int = 0
    #: The provider's own state name (``in_progress``, ``JOB_STATE_SUCCEEDED``, ...).
    provider_state: str = ""
    error: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


class BatchItemResult(_Frozen):
    id: str
    ok: bool
    text: str | None = None
    parsed: Any = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@runtime_checkable
class ProviderAdapter(Protocol):
    """What the engine needs from a model provider. Adapters never retry: the caller does
    (see :func:`airflow_workflow_engine.ai.retry.call_with_retries`), so each attempt can be
    recorded. Every failure is an :class:`~airflow_workflow_engine.ai.errors.ProviderError`."""

    @property
    def name(self) -> str: ...

    def generate(
        self,
        model_id: str,
        messages: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ProviderResponse: ...

    def stream(
        self,
        model_id: str,
        messages: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Iterator[StreamChunk]: ...

    def embed(
        self, model_id: str, texts: Sequence[str], *, dimensions: int | None = None
    ) -> EmbeddingResponse: ...

    def batch_submit(
        self, model_id: str, requests: Sequence[BatchRequest], *, idempotency_key: str
    ) -> BatchHandle:
        """Submits a batch, or returns the batch already submitted under ``idempotency_key``."""
        ...

    def batch_find(self, idempotency_key: str) -> BatchHandle | None:
        """The provider batch submitted under ``idempotency_key``, if any (re-attach)."""
        ...

    def batch_status(self, handle: BatchHandle) -> BatchStatus: ...

    def batch_results(self, handle: BatchHandle) -> list[BatchItemResult]:
        """One result per request, in ``handle.request_ids`` order (missing ones as errors)."""
        ...

    def batch_cancel(self, handle: BatchHandle) -> BatchStatus: ...


# ----------------------------------------------------------------------------- helpers


def to_messages(messages: Messages) -> list[ChatMessage]:
    """Normalises a prompt or a conversation; rejects empty input early with a clear error."""
    if isinstance(messages, str):
        return [ChatMessage(role="user", content=messages)]
    result = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages]
    if not result:
        raise ValueError("messages must not be empty")
    return result


def split_system(messages: Messages, system: str | None) -> tuple[str | None, list[ChatMessage]]:
    """``(system text, conversation without system messages)``: providers that take the system
    prompt apart (Gemini) need this; ``system`` comes first, then any system messages."""
    parts = [system] if system else []
    rest: list[ChatMessage] = []
    for message in to_messages(messages):
        if message.role == "system":
            parts.append(message.content)
        else:
            rest.append(message)
    if not rest:
        raise ValueError("messages need at least one user or assistant message")
    return ("\n\n".join(parts) or None), rest


def read_safely(read: Callable[[], Any]) -> Any:
    """``read()``, or ``None`` if it raises: for reading what we can of a malformed answer."""
    try:
        return read()
    except Exception:
        return None


def parse_json_text(text: str | None) -> Any:
    """The JSON object or array in a model's text (tolerating a Markdown code fence), else None."""
    if not text:
        return None
    candidate = text.strip()
    if candidate.startswith("```"):
        candidate = candidate.strip("`").removeprefix("json").strip()
    if not candidate.startswith(("{", "[")):
        return None
    try:
        return json.loads(candidate)
    except ValueError:
        return None


def idempotency_tag(idempotency_key: str, max_length: int = 128) -> str:
    """The label we attach to a provider batch to find it again (``awe-<key>``, hashed when long
    or unusual, since providers limit metadata values and display names)."""
    tag = f"awe-{idempotency_key}"
    if len(tag) <= max_length and tag.isprintable():
        return tag
    return "awe-sha256-" + hashlib.sha256(idempotency_key.encode()).hexdigest()


def check_batch_requests(requests: Sequence[BatchRequest]) -> tuple[str, ...]:
    """The request ids, after checking there is at least one and that none repeats."""
    ids = tuple(r.id for r in requests)
    if not ids:
        raise ValueError("a batch needs at least one request")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"batch request ids must be unique; repeated: {', '.join(duplicates)}")
    return ids
