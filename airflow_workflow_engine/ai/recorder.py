"""Recording model calls: retries, budgets, prices and the prompt policy in one place.

The AI helper, its streams and its batches all call providers through a :class:`CallRecorder`,
so that every attempt that reached a provider becomes exactly one ledger row, written at once
in its own transaction (see ``docs/adr/0001-ledger-rows-written-per-call.md``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

from airflow_workflow_engine.ai.budget import Budget, check_budget
from airflow_workflow_engine.ai.errors import AnswerReadError
from airflow_workflow_engine.ai.ledger import CallType, Ledger, LedgerEntry
from airflow_workflow_engine.ai.models import ModelKey
from airflow_workflow_engine.ai.prices import CallCost, cost_of_call
from airflow_workflow_engine.ai.prompts import PromptPolicy, apply_prompt_policy, mask_error
from airflow_workflow_engine.ai.retry import call_with_retries
from airflow_workflow_engine.ai.telemetry import notify_call_recorded
from airflow_workflow_engine.errors import BudgetExceededError

__all__ = ["CallIdentity", "CallRecorder", "RetryPolicy", "Usage"]

logger = logging.getLogger("airflow_workflow_engine.ai")

R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient provider errors (429, 5xx, timeouts): exponential backoff with
    jitter, honouring ``Retry-After`` (see :func:`~airflow_workflow_engine.ai.retry.
    call_with_retries`). ``sleep`` is replaceable for tests."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "base_delay": self.base_delay,
            "max_delay": self.max_delay,
            "sleep": self.sleep,
            "rng": self.rng,
        }


@dataclass(frozen=True)
class CallIdentity:
    """Who is calling; copied onto every ledger row."""

    topic: str
    workflow_run_id: str | None = None
    stage_id: str | None = None
    attempt: int | None = None
    dag_id: str | None = None
    task_id: str | None = None
    dag_run_id: str | None = None


@dataclass(frozen=True)
class Usage:
    """What one answered call used, in the providers' shared token convention."""

    model_id: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reported_cost: float | None = None
    response: str | None = None


def _usage_of(error: AnswerReadError, key: ModelKey) -> Usage:
    """What could be read of an unreadable answer's usage (missing numbers count as 0)."""

    def count(name: str) -> int:
        value = error.usage.get(name)
        return value if isinstance(value, int) and value >= 0 else 0

    cost = error.usage.get("reported_cost")
    return Usage(
        model_id=error.model_id or key.model_id,
        input_tokens=count("input_tokens"),
        output_tokens=count("output_tokens"),
        cached_tokens=count("cached_tokens"),
        reported_cost=float(cost) if isinstance(cost, (int, float)) else None,
    )


def _utc(moment: datetime) -> datetime:
    """An aware UTC time (SQLite gives naive UTC timestamps back)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


class CallRecorder:
    """Runs provider calls with retries and writes their ledger rows."""

    def __init__(
        self,
        ledger: Ledger,
        identity: CallIdentity,
        *,
        prompt_policy: PromptPolicy = "store",
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        secrets: Callable[[], list[str]] = list,
        reuse_answers_since: datetime | None = None,
    ) -> None:
        self.ledger = ledger
        self.reuse_answers_since = reuse_answers_since
        self.identity = identity
        self.prompt_policy = prompt_policy
        self.budget = budget or Budget()
        self.retry = retry or RetryPolicy()
        self._secrets = secrets
        self._lock = threading.Lock()
        self._spent = Decimal(0)
        self._answers: dict[tuple[str, str, str], list[LedgerEntry]] | None = None

    @property
    def spent_here(self) -> Decimal:
        """What calls through this recorder cost (priced calls only)."""
        with self._lock:
            return self._spent

    # -- before a call ---------------------------------------------------------------------
    def check_budget(self, key: ModelKey) -> None:
        if self.budget.is_unlimited:
            return
        check_budget(
            self.budget,
            self.ledger,
            model=str(key),
            workflow_run_id=self.identity.workflow_run_id,
            stage_id=self.identity.stage_id,
            topic=self.identity.topic,
            local_spent=self.spent_here,
        )

    # -- answers a lost attempt already paid for --------------------------------------------
    def recorded_answer(
        self, call_type: CallType, key: ModelKey, prompt: str
    ) -> LedgerEntry | None:
        """The row of an answer an earlier attempt of this stage execution was given for the
        same call (type, model, prompt): that attempt was lost before it finished (its worker
        was killed), so the retry reuses the answer instead of paying for it again. The n-th
        such call of this attempt gets the n-th recorded answer. Only rows written since the
        execution started (``reuse_answers_since``: a rerun of a finished stage is a new
        execution and asks again), that keep the response (prompt policy ``store``) and say
        nothing failed qualify: a failed attempt's rows are marked ``failure``, and its retry
        asks again."""
        ident = self.identity
        if self.reuse_answers_since is None or not (ident.attempt and ident.attempt > 1):
            return None
        if not (ident.workflow_run_id and ident.stage_id):
            return None
        with self._lock:
            if self._answers is None:
                self._answers = self._load_answers(ident.workflow_run_id, ident.stage_id)
            digest = hashlib.sha256(prompt.encode()).hexdigest()
            queue = self._answers.get((call_type, str(key), digest))
            return queue.pop(0) if queue else None

    def _load_answers(
        self, workflow_run_id: str, stage_id: str
    ) -> dict[tuple[str, str, str], list[LedgerEntry]]:
        answers: dict[tuple[str, str, str], list[LedgerEntry]] = {}
        try:
            rows = self.ledger.entries(workflow_run_id, stage_id)
        except Exception:  # no answers to reuse is never worse than failing the stage
            logger.exception("could not read the earlier attempts' AI calls; calling anew")
            return answers
        current = self.identity.attempt or 0
        since = _utc(self.reuse_answers_since) if self.reuse_answers_since else None
        for row in rows:
            earlier = row.attempt is not None and row.attempt < current
            earlier = earlier and since is not None and _utc(row.created_at) >= since
            answered = row.status == "ok" and row.failure is None and row.batch_id is None
            if earlier and answered and row.response is not None and row.prompt_hash:
                key = (row.call_type, row.model_key, row.prompt_hash)
                answers.setdefault(key, []).append(row)
        return answers

    # -- calling ---------------------------------------------------------------------------
    def call(
        self,
        call_type: CallType,
        key: ModelKey,
        provider: str,
        fn: Callable[[], R],
        *,
        prompt: str | None,
    ) -> tuple[R, float]:
        """``fn()`` with retries; each failed attempt that reached the provider is recorded
        here, the successful one is left to the caller (it knows the usage). Returns the
        result and the successful attempt's latency in seconds."""
        latency = [0.0]

        def on_attempt(number: int, error: BaseException | None, seconds: float) -> None:
            latency[0] = seconds
            if isinstance(error, AnswerReadError):
                # Answered and billed, but unreadable: the row keeps the tokens we could read.
                self.record_usage(
                    call_type,
                    key,
                    provider,
                    _usage_of(error, key),
                    latency_s=seconds,
                    prompt=prompt,
                    error=f"attempt {number}: {error}",
                )
            elif error is not None and not isinstance(error, BudgetExceededError):
                self.record_failure(
                    call_type,
                    key,
                    provider,
                    f"attempt {number}: {error}",
                    latency_s=seconds,
                    prompt=prompt,
                )

        result = call_with_retries(fn, on_attempt=on_attempt, **self.retry.kwargs())
        return result, latency[0]

    def control(self, fn: Callable[[], R]) -> R:
        """A call that is not billed (batch status, cancel, find): retried, not recorded."""
        return call_with_retries(fn, **self.retry.kwargs())

    # -- recording -------------------------------------------------------------------------
    def record_usage(
        self,
        call_type: CallType,
        key: ModelKey,
        provider: str,
        usage: Usage,
        *,
        latency_s: float | None,
        prompt: str | None,
        error: str | None = None,
        batch: bool = False,
        batch_id: str | None = None,
        request_id: str | None = None,
        entry_id: str | None = None,
    ) -> LedgerEntry:
        """Writes the row of an answered call. Nothing between the answer and the write may
        fail: a price that cannot be computed leaves ``cost`` unknown and says so in
        ``failure`` (the call was made and billed; failing it would make a retry pay again)."""
        failure: str | None = None
        try:
            cost = cost_of_call(
                str(key),
                provider=provider,
                model_id=usage.model_id,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                batch=batch,
                reported_cost=usage.reported_cost,
            )
        except Exception as exc:
            cost = CallCost(None, None)
            failure = f"pricing failed: {type(exc).__name__}: {exc}"
            logger.warning("AI call %s: %s; its cost is recorded as unknown", key, failure)
        fields: dict[str, Any] = {
            "call_type": call_type,
            "key": key,
            "provider": provider,
            "latency_s": latency_s,
            "error": error,
            "batch_id": batch_id,
            "request_id": request_id,
            "entry_id": entry_id,
        }
        try:
            entry = self._entry(
                **fields,
                model_id=usage.model_id,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                cost=cost.amount,
                cost_source=cost.source,
                prompt=prompt,
                response=usage.response,
                failure=failure,
            )
        except Exception as exc:
            # An answer we cannot describe (odd usage numbers, a prompt policy failing) still
            # leaves its row: what is known, without the texts.
            failure = f"recording the answer failed: {type(exc).__name__}: {exc}"
            entry = self._entry(
                **fields,
                model_id=key.model_id,
                cost=cost.amount,
                cost_source=cost.source,
                prompt=None,
                failure=failure,
            )
        self.write(entry)
        return entry

    def record_failure(
        self,
        call_type: CallType,
        key: ModelKey,
        provider: str,
        error: str,
        *,
        latency_s: float | None,
        prompt: str | None,
        model_id: str | None = None,
    ) -> LedgerEntry:
        """A call that reached the provider but got no usable answer: no tokens; no cost
        (providers do not bill refused requests; an interrupted one may have been billed,
        which nobody can tell us, so the cost is left unknown rather than made up)."""
        entry = self._entry(
            call_type=call_type,
            key=key,
            provider=provider,
            model_id=model_id or key.model_id,
            latency_s=latency_s,
            error=error,
            prompt=prompt,
        )
        self.write(entry)
        return entry

    def _entry(
        self,
        *,
        call_type: CallType,
        key: ModelKey,
        provider: str,
        model_id: str | None,
        latency_s: float | None,
        error: str | None,
        prompt: str | None,
        response: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        cost: Decimal | None = None,
        cost_source: Any = None,
        batch_id: str | None = None,
        request_id: str | None = None,
        entry_id: str | None = None,
        failure: str | None = None,
    ) -> LedgerEntry:
        secrets = self._secrets()
        stored_prompt, stored_response, prompt_hash = apply_prompt_policy(
            self.prompt_policy, prompt, response, secrets
        )
        ident = self.identity
        extra = {"id": entry_id} if entry_id is not None else {}
        return LedgerEntry(
            **extra,
            topic=ident.topic,
            call_type=call_type,
            provider=provider,
            model_key=str(key),
            model_id=model_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            cost=cost,
            cost_source=cost_source,
            latency_ms=None if latency_s is None else round(latency_s * 1000),
            status="ok" if error is None else "error",
            error=None if error is None else mask_error(error, secrets),
            failure=None if failure is None else mask_error(failure, secrets),
            workflow_run_id=ident.workflow_run_id,
            stage_id=ident.stage_id,
            attempt=ident.attempt,
            batch_id=batch_id,
            request_id=request_id,
            dag_id=ident.dag_id,
            task_id=ident.task_id,
            dag_run_id=ident.dag_run_id,
            prompt=stored_prompt,
            response=stored_response,
            prompt_hash=prompt_hash,
        )

    def write(self, entry: LedgerEntry) -> None:
        """Writes a row now, before anything else is done with it. A ledger that cannot be
        written does not fail the call (it was made, and paid for): the row goes to the log
        instead, for reconciliation."""
        try:
            self.ledger.record(entry)
        except Exception:
            logger.exception(
                "could not write the AI ledger row; the call was made. Row: %s",
                entry.model_dump_json(exclude={"prompt", "response"}),
            )
        self._account(entry)
        notify_call_recorded(entry)  # metrics and traces: after the row, never raising

    def _account(self, entry: LedgerEntry) -> None:
        """Budget accounting and the log line, after the row is written."""
        if entry.cost is not None:
            with self._lock:
                self._spent += entry.cost
        cost = "unknown" if entry.cost is None else f"${entry.cost:.6f}"
        logger.info(
            "AI %s call %s (%s): %s, %d in / %d out tokens, cost %s, %s ms%s",
            entry.call_type,
            entry.model_key,
            entry.topic,
            entry.status if entry.error is None else f"error: {entry.error}",
            entry.input_tokens,
            entry.output_tokens,
            cost,
            entry.latency_ms,
            f" ({entry.failure})" if entry.failure else "",
        )
