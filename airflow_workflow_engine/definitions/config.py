"""Config presets (the seed's ``withAIConfig`` / ``withStandardConfig`` / ``withFullConfig``).

Each returns a new pydantic model class: the given model's fields plus the preset's.

``model`` is required: there is no default model, so a stage never calls a provider (or the
mock) nobody chose. Its value is a model key, ``"<provider>:<model id>"``; the provider is
checked against the known ones when a run is created and when a DAG is parsed
(:func:`model_key_problems`). A field of your own is checked the same way when declared with
``Field(json_schema_extra={"x-model-key": True})``.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

__all__ = [
    "MODEL_KEY_MARK",
    "model_key_fields",
    "model_key_problems",
    "with_ai_config",
    "with_full_config",
    "with_standard_config",
]

#: ``json_schema_extra`` key marking a config field whose value is a model key.
MODEL_KEY_MARK = "x-model-key"

M = TypeVar("M", bound=BaseModel)

_AI_FIELDS: dict[str, Any] = {
    "model": (
        str,
        Field(
            description="Model key, e.g. 'openai:gpt-5-mini' ('mock:echo' for the offline mock)",
            json_schema_extra={MODEL_KEY_MARK: True},
        ),
    ),
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
    if "model" in clash:
        # The user's own ``model`` field is still what ``ctx.ai`` calls: check it as a key.
        own = model.model_fields["model"]
        marked = FieldInfo.merge_field_infos(own, json_schema_extra={MODEL_KEY_MARK: True})
        extra["model"] = (own.annotation, marked)
    base = model
    if "extra" not in model.model_config:
        # Our config models refuse unknown keys; an explicit choice of the user's stays.
        base = cast(
            "type[M]",
            type(
                model.__name__,
                (model,),
                {"model_config": ConfigDict(extra="forbid"), "__module__": model.__module__},
            ),
        )
    # Fields the user's model already declares win: presets only add what is missing.
    return create_model(f"{model.__name__}{name}", __base__=base, **extra)


def with_ai_config(model: type[M]) -> type[M]:
    """Adds ``model``, ``temperature``, ``max_tokens`` and ``max_cost``."""
    return _extend(model, "WithAI", _AI_FIELDS)


def with_standard_config(model: type[M]) -> type[M]:
    """AI fields plus ``concurrency`` and ``feature_flags``."""
    return _extend(model, "Standard", _AI_FIELDS | _STANDARD_FIELDS)


def with_full_config(model: type[M]) -> type[M]:
    """Standard fields plus ``debug`` and ``dry_run``."""
    return _extend(model, "Full", _AI_FIELDS | _STANDARD_FIELDS | _FULL_FIELDS)


def model_key_fields(model: type[BaseModel]) -> list[str]:
    """Names (aliases if set) of the fields of ``model`` that hold a model key."""
    found = []
    for name, fld in model.model_fields.items():
        extra = fld.json_schema_extra
        if isinstance(extra, Mapping) and extra.get(MODEL_KEY_MARK):
            found.append(fld.alias or name)
    return found


def model_key_problems(
    model: type[BaseModel], values: Mapping[str, Any], known_providers: Collection[str]
) -> list[dict[str, str]]:
    """``[{field, message}]`` for each model-key field of ``values`` (a validated config of
    ``model``) whose key has no provider prefix or names a provider not in
    ``known_providers``; the message lists them and the closest one."""
    known = sorted(set(known_providers))
    rows = []
    for name in model_key_fields(model):
        key = values.get(name)
        if not isinstance(key, str):
            continue
        provider, sep, model_id = key.strip().partition(":")
        if not sep or not provider or not model_id:
            message = (
                f"model key {key!r} must look like '<provider>:<model>', e.g. "
                "'openai:gpt-5-mini' or 'mock:echo'"
            )
        elif provider not in known:
            close = difflib.get_close_matches(provider, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}:{model_id}'?" if close else ""
            message = (
                f"unknown provider '{provider}' in model key {key!r}; known providers: "
                f"{', '.join(known)}{hint}"
            )
        else:
            continue
        rows.append({"field": name, "message": message})
    return rows
