"""call_with_retries: backoff, Retry-After, attempt callbacks, and error hygiene."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from airflow_workflow_engine.ai.errors import (
    ProviderConfigError,
    ProviderError,
    ProviderRetriesExhaustedError,
    TransientProviderError,
    redact_secrets,
    retry_after_from_headers,
)
from airflow_workflow_engine.ai.retry import backoff_delay, call_with_retries
from airflow_workflow_engine.errors import WorkflowEngineError

Attempt = tuple[int, str | None]


def _flaky(*errors: Exception, result: str = "ok") -> Callable[[], str]:
    pending = list(errors)

    def call() -> str:
        if pending:
            raise pending.pop(0)
        return result

    return call


def _recorder() -> tuple[list[Attempt], Callable[[int, BaseException | None, float], None]]:
    seen: list[Attempt] = []

    def on_attempt(attempt: int, exc: BaseException | None, latency: float) -> None:
        assert latency >= 0
        seen.append((attempt, type(exc).__name__ if exc else None))

    return seen, on_attempt


def test_retries_transient_errors_with_exponential_backoff() -> None:
    sleeps: list[float] = []
    seen, on_attempt = _recorder()
    fn = _flaky(*(TransientProviderError("openai", 503, "busy") for _ in range(3)))

    result = call_with_retries(
        fn, sleep=sleeps.append, on_attempt=on_attempt, base_delay=1, rng=random.Random(7)
    )

    assert result == "ok"
    assert seen == [
        (1, "TransientProviderError"),
        (2, "TransientProviderError"),
        (3, "TransientProviderError"),
        (4, None),
    ]
    # Equal jitter: each delay lies in [ceiling / 2, ceiling] for ceiling = 1, 2, 4.
    for delay, ceiling in zip(sleeps, (1, 2, 4), strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_is_honoured_exactly() -> None:
    sleeps: list[float] = []
    fn = _flaky(TransientProviderError("google", 429, "slow down", retry_after=2.5))
    assert call_with_retries(fn, sleep=sleeps.append) == "ok"
    assert sleeps == [2.5]


def test_retry_after_beyond_max_delay_is_raised_at_once() -> None:
    sleeps: list[float] = []
    error = TransientProviderError("openai", 429, "daily quota", retry_after=3600)
    with pytest.raises(TransientProviderError) as info:
        call_with_retries(_flaky(error), sleep=sleeps.append, max_delay=30)
    assert info.value is error
    assert sleeps == []


def test_non_transient_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    seen, on_attempt = _recorder()
    error = ProviderError("openai", 400, "bad schema")
    with pytest.raises(ProviderError) as info:
        call_with_retries(_flaky(error), sleep=sleeps.append, on_attempt=on_attempt)
    assert info.value is error
    assert (sleeps, seen) == ([], [(1, "ProviderError")])


def test_exhausted_retries_raise_a_clear_transient_error() -> None:
    sleeps: list[float] = []
    fn = _flaky(*(TransientProviderError("openai", 500, "boom") for _ in range(5)))
    with pytest.raises(ProviderRetriesExhaustedError) as info:
        call_with_retries(fn, max_attempts=3, sleep=sleeps.append)
    error = info.value
    assert isinstance(error, TransientProviderError) and error.retryable
    assert (error.attempts, error.status) == (3, 500)
    assert "gave up after 3 attempts" in str(error) and "HTTP 500" in str(error)
    assert isinstance(error.__cause__, TransientProviderError)
    assert len(sleeps) == 2


def test_connection_errors_are_retried_but_not_reported_as_attempts() -> None:
    seen, on_attempt = _recorder()
    refused = TransientProviderError("openai", None, "connection refused", reached_provider=False)
    timeout = TransientProviderError("openai", None, "timed out", reached_provider=True)
    result = call_with_retries(
        _flaky(refused, timeout), sleep=lambda _: None, on_attempt=on_attempt
    )
    assert result == "ok"
    assert seen == [(2, "TransientProviderError"), (3, None)]


def test_invalid_max_attempts() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        call_with_retries(lambda: 1, max_attempts=0)


def test_backoff_is_capped() -> None:
    assert backoff_delay(20, base_delay=1, max_delay=8, rng=random.Random(1)) <= 8


def test_error_types_and_messages() -> None:
    error = TransientProviderError("openai", 429, "slow down", retry_after=1.5)
    assert isinstance(error, WorkflowEngineError)
    assert str(error) == "openai API error (HTTP 429): slow down Retry after 1.5s."
    assert error.reached_provider
    assert not ProviderError("google", None, "x").reached_provider
    assert not ProviderConfigError("openai", "no key").retryable


def test_secrets_are_redacted_from_messages() -> None:
    key = "sk-proj-abcdefghijklmnop1234"
    text = (
        f"Incorrect API key provided: {key}. Authorization: Bearer {key} "
        "url=https://x/v1beta/models?key=AIzaSyA1234567890abcdefghijk&alt=sse "
        "x-goog-api-key: my-google-key custom-secret-value"
    )
    cleaned = redact_secrets(text, ["custom-secret-value"])
    for secret in (key, "AIzaSyA1234567890abcdefghijk", "my-google-key", "custom-secret-value"):
        assert secret not in cleaned
    assert key not in str(ProviderError("openai", 401, f"Incorrect API key provided: {key}"))


def test_retry_after_header_parsing() -> None:
    assert retry_after_from_headers({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_from_headers({"retry-after": "3"}) == 3.0
    assert retry_after_from_headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_from_headers({"retry-after": "soon"}) is None
    assert retry_after_from_headers(None) is None
