"""The AI helper: ``ctx.ai`` in a stage, :func:`create_ai_helper` anywhere else.

Every call names its model by key (``openai:gpt-5-mini``, ``google:gemini-2.5-flash``,
``mock:echo``), is checked against the budget first, is retried on transient errors, and leaves
one ledger row per attempt that reached the provider::

    helper = create_ai_helper("reports.weekly", InMemoryLedger())
    result = helper.generate_text("mock:echo", "Say hi")
    result.text, result.input_tokens, result.cost
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from airflow_workflow_engine.ai.batch import AIBatch
from airflow_workflow_engine.ai.budget import Budget
from airflow_workflow_engine.ai.ledger import Ledger, LedgerEntry
from airflow_workflow_engine.ai.models import ModelKey
from airflow_workflow_engine.ai.prompts import (
    PromptPolicy,
    check_prompt_policy,
    render_prompt,
    render_texts,
)
from airflow_workflow_engine.ai.providers.base import (
    ChatMessage,
    EmbeddingResponse,
    Messages,
    ProviderAdapter,
    ProviderResponse,
    parse_json_text,
    to_messages,
)
from airflow_workflow_engine.ai.recorder import CallIdentity, CallRecorder, RetryPolicy, Usage
from airflow_workflow_engine.ai.results import EmbedResult, ObjectResult, TextResult
from airflow_workflow_engine.ai.settings import ProviderRegistry, ProvidersLike
from airflow_workflow_engine.ai.streaming import TextStream
from airflow_workflow_engine.errors import (
    ModelOutputError,
    describe_errors,
    format_validation_errors,
)

__all__ = ["AIHelper", "create_ai_helper"]

T = TypeVar("T", bound=BaseModel)

_REPAIR = (
    "Your previous answer did not match the required JSON schema: {error}. Answer again with "
    "only a JSON value that matches the schema."
)


def _usage(response: ProviderResponse) -> Usage:
    return Usage(
        model_id=response.model_id,
        input_tokens=response.input_tokens,
        output_tokens=response.output_tokens,
        cached_tokens=response.cached_tokens,
        reported_cost=response.reported_cost,
        response=response.text,
    )


class AIHelper:
    """Typed model calls, priced and recorded in the ledger (see the module docstring).

    Build it with :func:`create_ai_helper` or, for stages, with
    :func:`~airflow_workflow_engine.ai.context.make_ai_factory`.
    """

    def __init__(
        self,
        *,
        topic: str,
        ledger: Ledger,
        providers: ProviderRegistry | ProvidersLike | None = None,
        budget: Budget | None = None,
        prompt_policy: PromptPolicy = "store",
        workflow_run_id: str | None = None,
        stage_id: str | None = None,
        attempt: int | None = None,
        dag_id: str | None = None,
        task_id: str | None = None,
        dag_run_id: str | None = None,
        default_model: str | None = None,
        retry: RetryPolicy | None = None,
        reuse_answers_since: datetime | None = None,
    ) -> None:
        self._providers = (
            providers if isinstance(providers, ProviderRegistry) else ProviderRegistry(providers)
        )
        if default_model is not None:
            self._providers.parse(default_model)
        self.default_model = default_model
        self._recorder = CallRecorder(
            ledger,
            CallIdentity(
                topic=topic,
                workflow_run_id=workflow_run_id,
                stage_id=stage_id,
                attempt=attempt,
                dag_id=dag_id,
                task_id=task_id,
                dag_run_id=dag_run_id,
            ),
            prompt_policy=check_prompt_policy(prompt_policy),
            budget=budget,
            retry=retry,
            secrets=self._providers.secrets,
            reuse_answers_since=reuse_answers_since,
        )

    def __repr__(self) -> str:
        return f"AIHelper(topic={self.topic!r}, providers={self._providers.names})"

    @property
    def topic(self) -> str:
        return self._recorder.identity.topic

    @property
    def ledger(self) -> Ledger:
        return self._recorder.ledger

    @property
    def budget(self) -> Budget:
        return self._recorder.budget

    @property
    def prompt_policy(self) -> PromptPolicy:
        return self._recorder.prompt_policy

    @property
    def spent(self) -> Decimal:
        """What this helper's calls cost so far (priced calls only)."""
        return self._recorder.spent_here

    def _resolve(self, model: str) -> tuple[ModelKey, ProviderAdapter]:
        key = self._providers.parse(model)
        return key, self._providers.adapter(key.provider)

    # -- text ------------------------------------------------------------------------------
    def generate_text(
        self,
        model: str,
        prompt: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> TextResult:
        """One answer to a prompt (a user message) or a conversation."""
        key, adapter = self._resolve(model)
        messages = to_messages(prompt)
        rendered = render_prompt(system, messages)
        recorded = self._recorder.recorded_answer("text", key, rendered)
        if recorded is not None:  # answered (and paid) in an attempt whose worker was lost
            return TextResult(**_result_fields(recorded), text=recorded.response or "")
        self._recorder.check_budget(key)
        response, latency = self._recorder.call(
            "text",
            key,
            adapter.name,
            lambda: adapter.generate(
                key.model_id,
                messages,
                system=system,
                temperature=temperature,
                max_tokens=max_tokens,
            ),
            prompt=rendered,
        )
        entry = self._recorder.record_usage(
            "text", key, adapter.name, _usage(response), latency_s=latency, prompt=rendered
        )
        return TextResult(
            **_result_fields(entry), text=response.text, finish_reason=response.finish_reason
        )

    # -- structured output -----------------------------------------------------------------
    def generate_object(
        self,
        model: str,
        prompt: Messages,
        schema: type[T],
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ObjectResult[T]:
        """An instance of ``schema`` (a pydantic model), through the provider's native
        structured output. An answer that fails validation is sent back once with the
        validation error; if the second answer fails too, :class:`ModelOutputError` quotes the
        error. Both calls are in the ledger (an invalid answer's row has status ``error``)."""
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise TypeError(f"schema must be a pydantic model class, got {schema!r}")
        key, adapter = self._resolve(model)
        json_schema = schema.model_json_schema()
        messages = to_messages(prompt)
        entries: list[LedgerEntry] = []
        error = ""
        for turn in range(2):
            response, entry, value, error = self._object_turn(
                key,
                adapter,
                schema,
                messages,
                json_schema=json_schema,
                system=system,
                temperature=temperature,
                max_tokens=max_tokens,
            )
            entries.append(entry)
            if value is not None:
                return ObjectResult(
                    **_result_fields(*entries), object=value, text=response.text, calls=turn + 1
                )
            messages = [
                *messages,
                ChatMessage(role="assistant", content=response.text),
                ChatMessage(role="user", content=_REPAIR.format(error=error)),
            ]
        raise ModelOutputError(
            f"{key} did not return a valid {schema.__name__}, even after being shown the "
            f"validation error (2 calls, both in the ledger under topic '{self.topic}'). "
            f"Validation error: {error}"
        )

    def _object_turn(
        self,
        key: ModelKey,
        adapter: ProviderAdapter,
        schema: type[T],
        messages: list[ChatMessage],
        *,
        json_schema: dict[str, Any],
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> tuple[ProviderResponse, LedgerEntry, T | None, str]:
        rendered = render_prompt(system, messages)
        recorded = self._recorder.recorded_answer("object", key, rendered)
        if recorded is not None:  # answered (and paid) in an attempt whose worker was lost
            replayed = _replayed_response(recorded, key)
            try:
                value, error = _validate(schema, replayed)
            except Exception:
                value = None
            if value is not None:
                return replayed, recorded, value, ""
        self._recorder.check_budget(key)
        response, latency = self._recorder.call(
            "object",
            key,
            adapter.name,
            lambda: adapter.generate(
                key.model_id,
                messages,
                system=system,
                temperature=temperature,
                max_tokens=max_tokens,
                json_schema=json_schema,
            ),
            prompt=rendered,
        )
        try:
            value, error = _validate(schema, response)
        except Exception as exc:  # a validator of the user's schema that raised: the row first
            value, error = None, f"validating the answer raised {type(exc).__name__}: {exc}"
        entry = self._recorder.record_usage(
            "object",
            key,
            adapter.name,
            _usage(response),
            latency_s=latency,
            prompt=rendered,
            error=None if value is not None else f"invalid output: {error}",
        )
        return response, entry, value, error

    # -- embeddings ------------------------------------------------------------------------
    def embed(
        self, model: str, texts: str | Sequence[str], *, dimensions: int | None = None
    ) -> EmbedResult:
        """One vector per text, in order."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or not all(isinstance(t, str) for t in items):
            raise ValueError("embed() needs a non-empty list of strings")
        if dimensions is not None and dimensions <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        key, adapter = self._resolve(model)
        rendered = render_texts(items)
        self._recorder.check_budget(key)
        response, latency = self._recorder.call(
            "embed",
            key,
            adapter.name,
            lambda: adapter.embed(key.model_id, items, dimensions=dimensions),
            prompt=rendered,
        )
        entry = self._recorder.record_usage(
            "embed", key, adapter.name, _embed_usage(response), latency_s=latency, prompt=rendered
        )
        return EmbedResult(**_result_fields(entry), vectors=response.vectors)

    # -- streaming -------------------------------------------------------------------------
    def stream_text(
        self,
        model: str,
        prompt: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> TextStream:
        """Text deltas as they arrive (iterate the returned :class:`TextStream`). The request
        starts here (errors before the first token are retried and raised here); the ledger
        row is written when the stream ends, fails or is abandoned."""
        key, adapter = self._resolve(model)
        messages = to_messages(prompt)
        rendered = render_prompt(system, messages)
        self._recorder.check_budget(key)
        started = time.monotonic()
        chunks, _ = self._recorder.call(
            "stream",
            key,
            adapter.name,
            lambda: adapter.stream(
                key.model_id,
                messages,
                system=system,
                temperature=temperature,
                max_tokens=max_tokens,
            ),
            prompt=rendered,
        )
        recorder = self._recorder

        def end(
            final: ProviderResponse | None, text: str, error: BaseException | None
        ) -> TextResult | None:
            latency = time.monotonic() - started
            if final is not None and error is None:
                entry = recorder.record_usage(
                    "stream", key, adapter.name, _usage(final), latency_s=latency, prompt=rendered
                )
                return TextResult(
                    **_result_fields(entry), text=final.text, finish_reason=final.finish_reason
                )
            what = f"failed: {error}" if error is not None else "abandoned by the caller"
            recorder.record_failure(
                "stream",
                key,
                adapter.name,
                f"stream {what} after {len(text)} characters; the provider reported no usage, "
                "so tokens and cost are unknown",
                latency_s=latency,
                prompt=rendered,
            )
            return None

        return TextStream(iter(chunks), end)

    # -- batches ---------------------------------------------------------------------------
    def batch(self, model: str) -> AIBatch:
        """The batch API of ``model``: ``submit``, ``status``, ``results``, ``cancel``."""
        key, adapter = self._resolve(model)
        return AIBatch(self._recorder, key, adapter)


def _replayed_response(entry: LedgerEntry, key: ModelKey) -> ProviderResponse:
    """A recorded answer (its ledger row) as the provider's response."""
    return ProviderResponse(
        provider=entry.provider,
        model_id=entry.model_id or key.model_id,
        text=entry.response or "",
        input_tokens=entry.input_tokens,
        output_tokens=entry.output_tokens,
        cached_tokens=entry.cached_tokens,
    )


def _validate(schema: type[T], response: ProviderResponse) -> tuple[T | None, str]:
    parsed = response.parsed if response.parsed is not None else parse_json_text(response.text)
    if parsed is None:
        snippet = response.text if len(response.text) <= 200 else response.text[:197] + "..."
        return None, f"the answer is not JSON: {json.dumps(snippet)}"
    try:
        return schema.model_validate(parsed), ""
    except ValidationError as exc:
        return None, describe_errors(format_validation_errors(exc.errors()))


def _embed_usage(response: EmbeddingResponse) -> Usage:
    dims = len(response.vectors[0]) if response.vectors else 0
    return Usage(
        model_id=response.model_id,
        input_tokens=response.input_tokens,
        reported_cost=response.reported_cost,
        response=f"{len(response.vectors)} vectors of {dims} dimensions",
    )


def _result_fields(*entries: LedgerEntry) -> dict[str, Any]:
    """Usage and cost of one or more rows (the last one names the model)."""
    last = entries[-1]
    costs = [e.cost for e in entries]
    known = None if any(c is None for c in costs) else sum((c for c in costs if c), Decimal(0))
    sources = {e.cost_source for e in entries}
    return {
        "model": last.model_key,
        "model_id": last.model_id or "",
        "provider": last.provider,
        "input_tokens": sum(e.input_tokens for e in entries),
        "output_tokens": sum(e.output_tokens for e in entries),
        "cached_tokens": sum(e.cached_tokens for e in entries),
        "cost": known,
        "cost_source": "reported" if sources == {"reported"} else last.cost_source,
        "latency_ms": sum(e.latency_ms or 0 for e in entries),
    }


def create_ai_helper(
    topic: str,
    ledger: Ledger,
    *,
    providers: ProviderRegistry | ProvidersLike | None = None,
    budget: Budget | float | Decimal | None = None,
    prompt_policy: PromptPolicy = "store",
    run_id: str | None = None,
    stage_id: str | None = None,
    attempt: int | None = None,
    retry: RetryPolicy | None = None,
    reuse_answers_since: datetime | None = None,
) -> AIHelper:
    """A helper outside stages (scripts, notebooks, hooks). ``budget`` may be a number: the
    run's cap when ``run_id`` is given, else a cap on what this helper spends.
    ``reuse_answers_since``: the start of the stage execution ``attempt`` belongs to; answers
    its earlier, lost attempts recorded since then are reused, not paid again (stages get
    this from the kernel)."""
    if budget is not None and not isinstance(budget, Budget):
        budget = Budget.of(run_max_cost=budget)
    return AIHelper(
        topic=topic,
        ledger=ledger,
        providers=providers,
        budget=budget,
        prompt_policy=prompt_policy,
        workflow_run_id=run_id,
        stage_id=stage_id,
        attempt=attempt,
        retry=retry,
        reuse_answers_since=reuse_answers_since,
    )
