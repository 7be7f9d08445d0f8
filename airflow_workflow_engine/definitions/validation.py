"""Model validation that raises the engine's typed errors with field paths."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from airflow_workflow_engine.errors import (
    _ValidationFailure,
    describe_errors,
    format_validation_errors,
)

M = TypeVar("M", bound=BaseModel)


def validate_model(
    model: type[M],
    data: Any,
    error_cls: type[_ValidationFailure],
    what: str,
) -> M:
    """Validates ``data`` into ``model``; failures raise ``error_cls`` naming ``what`` and fields.

    An instance of ``model`` is validated again from its dump, so an object built with
    ``model_construct`` (or mutated after creation) cannot slip through unchecked.
    """
    try:
        if isinstance(data, model):
            return model.model_validate(data.model_dump(by_alias=True))
        if isinstance(data, BaseModel) and not isinstance(data, model):
            data = data.model_dump(by_alias=True)
        return model.model_validate(data)
    except ValidationError as exc:
        rows = format_validation_errors(exc.errors())
        raise error_cls(f"Invalid {what}: {describe_errors(rows)}", rows) from None


def to_json(value: BaseModel | dict[str, Any] | None) -> Any:
    """JSON-able form of a model (by alias) or a dict of models."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return {k: to_json(v) if isinstance(v, BaseModel) else v for k, v in value.items()}
