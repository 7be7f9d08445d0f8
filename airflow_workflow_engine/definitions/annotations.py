"""Annotation value types: actors, typed keys and buffered annotations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Actor", "ActorKind", "PendingAnnotation", "TypedKey", "typed_key"]

T = TypeVar("T")

ActorKind = Literal["stage", "system", "user", "agent", "plugin"]


class Actor(BaseModel):
    """Who made an annotation: a stage, the system (Airflow), a user, an agent or a plugin."""

    model_config = ConfigDict(frozen=True)

    kind: str
    id: str
    version: str | None = None


@dataclass(frozen=True)
class TypedKey(Generic[T]):
    """A well-known annotation key whose value type is known: ``Decision.outcome``."""

    key: str

    def __str__(self) -> str:
        return self.key


def typed_key(key: str, value_type: type[T] | None = None) -> TypedKey[T]:
    """Declares a well-known key. ``value_type`` is for readers and type checkers."""
    del value_type
    return TypedKey(key)


@dataclass(frozen=True)
class PendingAnnotation:
    """An annotation buffered by a stage until its outcome commits."""

    key: str
    value: Any
    actor: Actor


def coerce_actor(actor: Actor | dict[str, Any]) -> Actor:
    return actor if isinstance(actor, Actor) else Actor.model_validate(actor)
