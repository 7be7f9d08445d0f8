"""Typed errors of the model providers.

Adapters turn every SDK error into one of these, so callers (the retry layer, the AI helper,
Airflow's task retries) decide on a type, never on an SDK's exception classes. Messages never
include API keys or auth headers: :func:`redact_secrets` scrubs anything that looks like one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

from airflow_workflow_engine.errors import WorkflowEngineError

__all__ = [
    "AnswerReadError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderRetriesExhaustedError",
    "TransientProviderError",
    "redact_secrets",
    "retry_after_from_headers",
]

_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]+=*"),
    re.compile(
        r"(?i)(x-goog-api-key|api[_-]?key|authorization)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"
    ),
    re.compile(r"(?i)([?&]key=)[^&\s'\"]+"),
)


def redact_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets and anything shaped like an API key replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)}***", text)
        else:
            text = pattern.sub("***", text)
    return text


class ProviderError(WorkflowEngineError):
    """A model provider refused or failed a request.

    Attributes:
        provider: ``"openai"``, ``"google"``, ``"mock"``, ...
        status: the HTTP status, or ``None`` when no response came back.
        retry_after: seconds the provider asked us to wait, if it said.
        reached_provider: whether the request (probably) reached the provider and may be billed:
            true when it answered, or timed out after sending; false for connection errors.
    """

    retryable = False

    def __init__(
        self,
        provider: str,
        status: int | None,
        message: str,
        retry_after: float | None = None,
        *,
        reached_provider: bool | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.reached_provider = status is not None if reached_provider is None else reached_provider
        self.detail = redact_secrets(message)
        if status is not None:
            where = f" (HTTP {status})"
        else:
            where = "" if self.reached_provider else " (no response)"
        hint = f" Retry after {retry_after:g}s." if retry_after is not None else ""
        super().__init__(f"{provider} API error{where}: {self.detail}{hint}")


class TransientProviderError(ProviderError):
    """Worth retrying: rate limits (429), server errors (5xx), timeouts and connection errors."""

    retryable = True


class ProviderConfigError(ProviderError):
    """The adapter cannot be used as configured: no API key, SDK not installed, bad base URL."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(provider, None, message, reached_provider=False)


class AnswerReadError(ProviderError):
    """The provider answered (HTTP 200, billed) but the answer could not be read into a
    response. ``usage`` holds what could still be read of it (token counts, a reported cost)
    and ``model_id`` the model that answered, so the ledger row keeps the cost. Not retried
    here: the same answer would fail the same way."""

    def __init__(
        self,
        provider: str,
        cause: BaseException,
        *,
        usage: Mapping[str, object] | None = None,
        model_id: str | None = None,
    ) -> None:
        self.usage = dict(usage or {})
        self.model_id = model_id
        super().__init__(
            provider,
            200,
            f"could not read the answer: {type(cause).__name__}: {cause}",
            reached_provider=True,
        )


class ProviderRetriesExhaustedError(TransientProviderError):
    """The retry layer gave up; still transient, so an Airflow task retry may succeed later."""

    def __init__(self, last_error: TransientProviderError, attempts: int) -> None:
        self.last_error = last_error
        self.attempts = attempts
        super().__init__(
            last_error.provider,
            last_error.status,
            f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}; last error: "
            f"{last_error.detail}",
            last_error.retry_after,
            reached_provider=last_error.reached_provider,
        )


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
