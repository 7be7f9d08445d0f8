"""How the CLI and the UI show values: dates, money and JSON previews. No ``airflow`` import."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from airflow_workflow_engine.host.queries import QueryError

__all__ = ["PREVIEW_CHARS", "exact", "iso", "money_text", "parse_when", "preview"]

#: Characters of a stage output shown by ``runs show`` and the run page.
PREVIEW_CHARS = 200

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_when(text: str, parse: Callable[..., datetime], *, end: bool = False) -> datetime:
    """A date or date-time from the user, timezone-aware.

    ``parse(text, strict=False)`` reads it (Airflow's ``timezone.parse``: a date alone is in
    Airflow's default timezone). A date alone is the start of that day; with ``end=True`` it is
    the end of that day, so the day is included. A text that is no date raises
    :class:`~airflow_workflow_engine.host.queries.QueryError`.
    """
    try:
        when: datetime = parse(text.strip(), strict=False)
    except Exception as exc:
        raise QueryError(
            f"Cannot read {text!r} as a date: use YYYY-MM-DD or an ISO 8601 date-time "
            "(2026-01-31T12:00:00+00:00)."
        ) from exc
    if end and _DATE_ONLY.match(text.strip()):
        when = when + timedelta(days=1) - timedelta(microseconds=1)
    return when


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC, to the second."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def money_text(value: float | Decimal | None) -> str:
    """``$0.000123`` (the ledger's format)."""
    from airflow_workflow_engine.ai.report import format_cost

    if value is None:
        return format_cost(None)
    return format_cost(value if isinstance(value, Decimal) else Decimal(repr(value)))


def exact(value: Any) -> Any:
    """``value`` for JSON or YAML: amounts as exact decimal strings (``"0.0000436"``, never a
    float such as ``4.36e-05``), timestamps as ISO 8601; lists and dicts recursively."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): exact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact(v) for v in value]
    return value


def preview(value: Any, width: int = PREVIEW_CHARS) -> str:
    """Compact JSON of ``value``, cut to ``width`` characters."""
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."
