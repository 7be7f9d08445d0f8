"""Config presets (the seed's ``withAIConfig`` / ``withStandardConfig`` / ``withFullConfig``).

Each returns a new pydantic model class: the given model's fields plus the preset's.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field, create_model

__all__ = ["with_ai_config", "with_full_config", "with_standard_config"]

M = TypeVar("M", bound=BaseModel)

_AI_FIELDS: dict[str, Any] = {
    "model": (str, Field("mock:echo", description="Model key, e.g. 'openai:gpt-5-mini'")),
    "temperature": (float, Field(0.7, ge=0.0, le=2.0, description="Sampling temperature")),
    "max_tokens": (int | None, Field(None, gt=0, description="Maximum output tokens")),
    "max_cost": (float | None, Field(None, ge=0.0, description="Budget for this stage (USD)")),
}
_STANDARD_FIELDS: dict[str, Any] = {
    "concurrency": (int, Field(5, ge=1, description="Concurrent operations inside the stage")),
    "feature_flags": (dict[str, bool], Field(default_factory=dict, description="Feature flags")),
}
_FULL_FIELDS: dict[str, Any] = {
    "debug": (bool, Field(False, description="Verbose debug logging")),
    "dry_run": (bool, Field(False, description="Skip side effects")),
}


def _extend(model: type[M], name: str, fields: dict[str, Any]) -> type[M]:
    clash = sorted(set(fields) & set(model.model_fields))
    extra = {k: v for k, v in fields.items() if k not in clash}
    # Fields the user's model already declares win: presets only add what is missing.
    return create_model(f"{model.__name__}{name}", __base__=model, **extra)


def with_ai_config(model: type[M]) -> type[M]:
    """Adds ``model``, ``temperature``, ``max_tokens`` and ``max_cost``."""
    return _extend(model, "WithAI", _AI_FIELDS)


def with_standard_config(model: type[M]) -> type[M]:
    """AI fields plus ``concurrency`` and ``feature_flags``."""
    return _extend(model, "Standard", _AI_FIELDS | _STANDARD_FIELDS)


def with_full_config(model: type[M]) -> type[M]:
    """Standard fields plus ``debug`` and ``dry_run``."""
    return _extend(model, "Full", _AI_FIELDS | _STANDARD_FIELDS | _FULL_FIELDS)
