"""Retries of provider calls: exponential backoff with jitter, honouring ``Retry-After``.

The SDKs' own retries are switched off in the adapters so that this is the only retry layer and
every attempt is visible to ``on_attempt`` (the AI helper writes one ledger row per attempt).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from airflow_workflow_engine.ai.errors import (
    ProviderError,
    ProviderRetriesExhaustedError,
    TransientProviderError,
)

__all__ = ["OnAttempt", "backoff_delay", "call_with_retries"]

T = TypeVar("T")

#: ``on_attempt(attempt, error_or_None, latency_seconds)``; ``attempt`` counts from 1.
OnAttempt = Callable[[int, BaseException | None, float], None]


def backoff_delay(
    attempt: int, *, base_delay: float, max_delay: float, rng: random.Random | None = None
) -> float:
    """Delay before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped, with
    "equal jitter" (between half and all of it) so parallel tasks do not retry in lockstep."""
    ceiling = min(max_delay, base_delay * 2.0 ** (attempt - 1))
    fraction = rng.random() if rng is not None else random.random()
    return ceiling / 2 + fraction * ceiling / 2


def call_with_retries(
    fn: Callable[[], T],
    *,
    max_attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    on_attempt: OnAttempt | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """Calls ``fn`` until it succeeds, retrying :class:`TransientProviderError` only.

    * A provider's ``retry_after`` is honoured: we wait exactly that long. If it asks for more
      than ``max_delay``, we stop at once (a worker should not sleep through a daily quota) and
      the error is raised for Airflow's task retry to handle later.
    * Non-transient errors (bad request, auth, schema) are raised at once.
    * ``on_attempt`` is called after every attempt that reached the provider (success or
      failure); connection errors that never reached it are not reported.
    * When attempts run out, :class:`ProviderRetriesExhaustedError` (still transient) is raised
      from the last error.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    attempt = 0
    while True:
        attempt += 1
        started = clock()
        try:
            result = fn()
        except Exception as exc:
            latency = clock() - started
            if on_attempt is not None and (
                not isinstance(exc, ProviderError) or exc.reached_provider
            ):
                on_attempt(attempt, exc, latency)
            if not isinstance(exc, TransientProviderError):
                raise
            if attempt >= max_attempts:
                raise ProviderRetriesExhaustedError(exc, attempt) from exc
            if exc.retry_after is not None:
                if exc.retry_after > max_delay:
                    raise
                delay = max(exc.retry_after, 0.0)
            else:
                delay = backoff_delay(attempt, base_delay=base_delay, max_delay=max_delay, rng=rng)
            sleep(delay)
            continue
        if on_attempt is not None:
            on_attempt(attempt, None, clock() - started)
        return result
