"""What a route answers (:class:`Reply`, :class:`HTTPError`) and small encoding helpers the
providers' routes share."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


class HTTPError(Exception):
    """Raised by a route: answered as the provider's error body with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: Default error messages by status (when a test injects a failure without one).
DEFAULT_ERROR_MESSAGES = {
    429: "Rate limit reached (fake).",
    500: "The server had an error while processing your request (fake).",
    503: "The service is overloaded (fake).",
}


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, jsonlib.dumps(data).encode())


def sse_reply(events: list[Any], separator: bytes, trailer: bytes = b"") -> Reply:
    """Server-sent events, one JSON document each."""
    body = b"".join(b"data: " + jsonlib.dumps(e).encode() + separator for e in events)
    return Reply(200, body + trailer, content_type="text/event-stream")


def format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def require_obj(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise HTTPError(400, "The request body must be a JSON object.")
    return value


def pieces(text: str, size: int = 3) -> list[str]:
    """Splits text into stream deltas of a few words each (concatenating them restores it)."""
    words = text.split(" ")
    groups = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [g + (" " if i < len(groups) - 1 else "") for i, g in enumerate(groups)] if text else []


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
