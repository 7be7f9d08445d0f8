"""Model validation that raises the engine's typed errors with field paths."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
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
    *,
    refuse_unknown_keys: bool = False,
) -> M:
    """Validates ``data`` into ``model``; failures raise ``error_cls`` naming ``what`` and fields.

    An instance of ``model`` is validated again from its dump, so an object built with
    ``model_construct`` (or mutated after creation) cannot slip through unchecked.

    ``refuse_unknown_keys``: keys ``model`` does not have are errors naming the key and the
    closest valid one, even when the model ignores extra keys (pydantic's default), unless the
    model says ``extra="allow"`` or ``extra="ignore"`` explicitly.
    """
    if isinstance(data, BaseModel) and not isinstance(data, model):
        data = data.model_dump(by_alias=True)
    unknown = unknown_keys(model, data) if refuse_unknown_keys else []
    try:
        if isinstance(data, model):
            return_value = model.model_validate(data.model_dump(by_alias=True))
        else:
            return_value = model.model_validate(data)
        errors: list[Any] = []
    except ValidationError as exc:
        # Pydantic's "Extra inputs are not permitted" says less than our unknown-key row.
        reported = {row.field for row in unknown}
        errors = [
            e
            for e in exc.errors()
            if not (e["type"] == "extra_forbidden" and ".".join(map(str, e["loc"])) in reported)
        ]
    if not unknown and not errors:
        return return_value
    rows = [{"field": u.field, "message": u.message} for u in unknown]
    rows += format_validation_errors(errors)
    where = f" in {what}" if what else ""
    parts = [f"unknown key '{u.field}'{where}; {u.hint}" for u in unknown]
    if errors:
        detail = describe_errors(format_validation_errors(errors))
        parts.append(f"Invalid {what}: {detail}" if what else detail)
    raise error_cls(join_sentences(parts), rows) from None


def join_sentences(parts: list[str]) -> str:
    """One part as it is; several as sentences (``a?`` ``b.``), one after the other."""
    if len(parts) == 1:
        return parts[0]
    return " ".join(p if p.endswith((".", "?")) else f"{p}." for p in parts)


@dataclass(frozen=True)
class UnknownKey:
    """A key of the data that the model has no field for."""

    field: str  # dotted path
    hint: str  # "did you mean 'model'?" or the valid keys

    @property
    def message(self) -> str:
        return f"unknown key; {self.hint}"


def unknown_keys(model: type[BaseModel], data: Any, prefix: str = "") -> list[UnknownKey]:
    """Each key of ``data`` (a mapping) that ``model`` does not have, nested models included,
    with the closest valid key (difflib). Models that say ``extra="allow"`` or
    ``extra="ignore"`` explicitly accept any key."""
    if not isinstance(data, Mapping) or model.model_config.get("extra") in ("allow", "ignore"):
        return []
    names: set[str] = set()
    nested: dict[str, type[BaseModel]] = {}
    for name, fld in model.model_fields.items():
        for key in (name, fld.alias, fld.validation_alias):
            if isinstance(key, str):
                names.add(key)
                if isinstance(fld.annotation, type) and issubclass(fld.annotation, BaseModel):
                    nested[key] = fld.annotation
    found: list[UnknownKey] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key in nested:
            found += unknown_keys(nested[key], value, f"{path}.")
        elif key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1, cutoff=0.6)
            if close:
                hint = f"did you mean '{prefix}{close[0]}'?"
            elif names:
                hint = f"valid keys are {', '.join(sorted(names))}"
            else:
                hint = "there are no valid keys"
            found.append(UnknownKey(path, hint))
    return found


def to_json(value: BaseModel | dict[str, Any] | None) -> Any:
    """JSON-able form of a model (by alias) or a dict of models."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return {k: to_json(v) if isinstance(v, BaseModel) else v for k, v in value.items()}


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and scalars), much cheaper than
    ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value
