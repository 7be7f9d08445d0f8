"""What the AI helper's calls return: the answer, its usage and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

__all__ = ["AIResult", "BatchItem", "EmbedResult", "ObjectResult", "TextResult"]

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class AIResult:
    """Usage and cost of a call. ``model`` is the model key asked for, ``model_id`` what the
    provider says answered. ``cost`` is ``None`` when the price is unknown."""

    model: str
    model_id: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: Decimal | None = None
    cost_source: Literal["reported", "estimated"] | None = None
    latency_ms: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, kw_only=True)
class TextResult(AIResult):
    text: str = ""
    finish_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class ObjectResult(AIResult, Generic[T]):
    """A validated object. Usage and cost cover every call made for it (``calls`` is 2 when the
    first answer had to be repaired)."""

    object: T
    text: str = ""
    calls: int = 1


@dataclass(frozen=True, kw_only=True)
class EmbedResult(AIResult):
    vectors: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class BatchItem:
    """One request's outcome in a finished batch."""

    id: str
    ok: bool
    text: str | None = None
    parsed: Any = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: Decimal | None = None
    cost_source: Literal["reported", "estimated"] | None = None
