"""OpenAI (and any OpenAI-compatible endpoint) through the official ``openai`` SDK.

The SDK is imported when the first request is made, never at module import, so DAG files that
only mention this adapter stay cheap to parse. SDK retries are off (``max_retries=0``): the
engine's retry layer retries, and records every attempt.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, Literal

from airflow_workflow_engine.ai.errors import (
    AnswerReadError,
    ProviderConfigError,
    ProviderError,
    TransientProviderError,
    retry_after_from_headers,
)
from airflow_workflow_engine.ai.providers.base import (
    BatchHandle,
    BatchItemResult,
    BatchRequest,
    BatchState,
    BatchStatus,
    EmbeddingResponse,
    Messages,
    ProviderResponse,
    StreamChunk,
    check_batch_requests,
    idempotency_tag,
    parse_json_text,
    read_safely,
    to_messages,
)

if TYPE_CHECKING:
    from openai import OpenAI
    from openai.types import Batch, CompletionUsage
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["OpenAIAdapter"]

_BATCH_ENDPOINT: Final = "/v1/chat/completions"
_TAG_KEY = "awe_idempotency_tag"
_MODEL_KEY = "awe_model"
_EMBED_CHUNK = 2048  # inputs per embeddings request (the API's limit)
_STATES = {
    "validating": BatchState.PENDING,
    "in_progress": BatchState.RUNNING,
    "finalizing": BatchState.RUNNING,
    "cancelling": BatchState.RUNNING,
    "completed": BatchState.COMPLETED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelled": BatchState.CANCELLED,
}
#: A batch found under an idempotency key in one of these states is not re-used on submit.
_DEAD_STATES = {"failed", "expired", "cancelled", "cancelling"}


class OpenAIAdapter:
    """:class:`~airflow_workflow_engine.ai.providers.base.ProviderAdapter` for OpenAI.

    Args:
        api_key: defaults to ``OPENAI_API_KEY``. May be omitted for an OpenAI-compatible
            ``base_url`` that needs no key (a local server).
        base_url: defaults to ``OPENAI_BASE_URL``, else OpenAI's own API.
        max_tokens_param: the request field for ``max_tokens``: OpenAI's current models want
            ``max_completion_tokens`` (the default for OpenAI's API); many compatible servers
            only know ``max_tokens`` (the default for any other ``base_url``).
        provider_name: the name reported in responses, errors and the ledger (e.g. ``"groq"``).
        batch_scan_limit: how many recent batches :meth:`batch_find` looks through.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        organization: str | None = None,
        timeout: float = 120.0,
        max_tokens_param: Literal["max_completion_tokens", "max_tokens"] | None = None,
        provider_name: str = "openai",
        batch_scan_limit: int = 200,
        client: OpenAI | None = None,
    ) -> None:
        self._name = provider_name
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and client is None:
            if self._base_url is None:
                raise ProviderConfigError(
                    provider_name,
                    "no API key: pass api_key=..., set OPENAI_API_KEY, or configure the "
                    "Airflow connection.",
                )
            key = "unused"  # OpenAI-compatible local servers accept any key
        self._api_key = key or ""
        self._organization = organization
        self._timeout = timeout
        official = self._base_url is None or "api.openai.com" in self._base_url
        self._max_tokens_param = max_tokens_param or (
            "max_completion_tokens" if official else "max_tokens"
        )
        self._batch_scan_limit = batch_scan_limit
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIAdapter(provider_name={self._name!r}, base_url={self._base_url!r})"

    @property
    def client(self) -> OpenAI:
        """The SDK client, created (and ``openai`` imported) on first use."""
        with self._client_lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as exc:
                    raise ProviderConfigError(
                        self._name,
                        "the 'openai' package is not installed: "
                        "pip install 'airflow-workflow-engine[openai]'",
                    ) from exc
                self._client = openai.OpenAI(
                    api_key=self._api_key,
                    base_url=self._base_url,
                    organization=self._organization,
                    timeout=self._timeout,
                    max_retries=0,
                )
            return self._client

    # ------------------------------------------------------------------ text

    def generate(
        self,
        model_id: str,
        messages: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ProviderResponse:
        params = self._chat_params(
            model_id,
            messages,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            json_schema=json_schema,
        )
        with self._translate_errors():
            completion: ChatCompletion = self.client.chat.completions.create(**params)
        try:
            return self._response(completion, model_id, structured=json_schema is not None)
        except Exception as exc:  # answered and billed: keep what can be read for the ledger
            raise AnswerReadError(
                self._name,
                exc,
                usage=read_safely(lambda: _usage_fields(completion.usage)),
                model_id=read_safely(lambda: completion.model) or None,
            ) from exc

    def stream(
        self,
        model_id: str,
        messages: Messages,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Iterator[StreamChunk]:
        """Starts the request at once (so errors surface here, inside a retry wrapper), then
        yields text deltas and a final chunk with the whole answer and its usage."""
        params = self._chat_params(
            model_id,
            messages,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            json_schema=json_schema,
        )
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        with self._translate_errors():
            events = self.client.chat.completions.create(**params)
        return self._stream_chunks(events, model_id, structured=json_schema is not None)

    def _stream_chunks(
        self, events: Any, model_id: str, *, structured: bool
    ) -> Iterator[StreamChunk]:
        parts: list[str] = []
        usage: CompletionUsage | None = None
        finish: str | None = None
        reported_model, response_id = model_id, None
        try:
            with self._translate_errors():
                for chunk in events:
                    event: ChatCompletionChunk = chunk
                    reported_model = event.model or reported_model
                    response_id = event.id or response_id
                    usage = event.usage or usage
                    for choice in event.choices:
                        finish = choice.finish_reason or finish
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                            yield StreamChunk(delta=choice.delta.content)
        finally:
            events.close()
        text = "".join(parts)
        yield StreamChunk(
            final=ProviderResponse(
                provider=self._name,
                model_id=reported_model,
                text=text,
                parsed=parse_json_text(text) if structured else None,
                finish_reason=finish,
                response_id=response_id,
                **_usage_fields(usage),
            )
        )

    def _chat_params(
        self,
        model_id: str,
        messages: Messages,
        *,
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
        json_schema: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        chat = [{"role": "system", "content": system}] if system else []
        chat += [m.model_dump() for m in to_messages(messages)]
        params: dict[str, Any] = {"model": model_id, "messages": chat}
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params[self._max_tokens_param] = max_tokens
        if json_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(json_schema),
                    "schema": dict(json_schema),
                    # Strict mode guarantees valid output but only accepts closed schemas.
                    "strict": _strict_compatible(json_schema),
                },
            }
        return params

    def _response(
        self, completion: ChatCompletion, model_id: str, *, structured: bool
    ) -> ProviderResponse:
        choice = completion.choices[0] if completion.choices else None
        text = (choice.message.content or choice.message.refusal or "") if choice else ""
        return ProviderResponse(
            provider=self._name,
            model_id=completion.model or model_id,
            text=text,
            parsed=parse_json_text(text) if structured else None,
            finish_reason=choice.finish_reason if choice else None,
            response_id=completion.id,
            **_usage_fields(completion.usage),
        )

    # ------------------------------------------------------------------ embeddings

    def embed(
        self, model_id: str, texts: Sequence[str], *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        vectors: list[list[float]] = []
        tokens = 0
        reported_model = model_id
        for start in range(0, len(texts), _EMBED_CHUNK):
            params: dict[str, Any] = {
                "model": model_id,
                "input": list(texts[start : start + _EMBED_CHUNK]),
            }
            if dimensions is not None:
                params["dimensions"] = dimensions
            with self._translate_errors():
                response = self.client.embeddings.create(**params)
            vectors += [list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)]
            tokens += response.usage.prompt_tokens if response.usage else 0
            reported_model = response.model or reported_model
        return EmbeddingResponse(
            provider=self._name, model_id=reported_model, vectors=vectors, input_tokens=tokens
        )

    # ------------------------------------------------------------------ batches

    def batch_submit(
        self, model_id: str, requests: Sequence[BatchRequest], *, idempotency_key: str
    ) -> BatchHandle:
        """Uploads the requests as a JSONL file and creates a batch tagged (in its metadata)
        with ``idempotency_key``. A live or completed batch already tagged with the key is
        returned instead, so a crashed and retried submit does not pay twice."""
        ids = check_batch_requests(requests)
        existing = self._find(idempotency_key, skip_dead=True)
        if existing is not None:
            return existing.model_copy(update={"request_ids": ids, "model_id": model_id})
        lines = []
        for request in requests:
            body = self._chat_params(
                model_id,
                request.chat_messages(),
                system=request.system,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                json_schema=request.json_schema,
            )
            lines.append(
                {"custom_id": request.id, "method": "POST", "url": _BATCH_ENDPOINT, "body": body}
            )
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        tag = idempotency_tag(idempotency_key, 512)
        with self._translate_errors():
            upload = self.client.files.create(
                file=(f"{tag[:100]}.jsonl", content, "application/jsonl"), purpose="batch"
            )
            batch = self.client.batches.create(
                input_file_id=upload.id,
                endpoint=_BATCH_ENDPOINT,
                completion_window="24h",
                metadata={_TAG_KEY: tag, _MODEL_KEY: model_id[:512]},
            )
        return BatchHandle(
            provider=self._name,
            model_id=model_id,
            batch_id=batch.id,
            request_ids=ids,
            submitted_at=_from_epoch(batch.created_at),
            idempotency_key=idempotency_key,
        )

    def batch_find(self, idempotency_key: str) -> BatchHandle | None:
        """The newest batch tagged with ``idempotency_key`` among the recent ones, in any
        state; its request ids are read back from its input file."""
        return self._find(idempotency_key, skip_dead=False)

    def _find(self, idempotency_key: str, *, skip_dead: bool) -> BatchHandle | None:
        tag = idempotency_tag(idempotency_key, 512)
        found: Batch | None = None
        with self._translate_errors():
            for scanned, batch in enumerate(self.client.batches.list(limit=100)):
                if scanned >= self._batch_scan_limit:
                    break
                if (batch.metadata or {}).get(_TAG_KEY) != tag:
                    continue
                if found is None or batch.created_at > found.created_at:
                    found = batch
            if found is None or (skip_dead and found.status in _DEAD_STATES):
                return None
            content = self.client.files.content(found.input_file_id).text
        request_ids = [
            json.loads(line)["custom_id"] for line in content.splitlines() if line.strip()
        ]
        return BatchHandle(
            provider=self._name,
            model_id=(found.metadata or {}).get(_MODEL_KEY, ""),
            batch_id=found.id,
            request_ids=tuple(request_ids),
            submitted_at=_from_epoch(found.created_at),
            idempotency_key=idempotency_key,
        )

    def batch_status(self, handle: BatchHandle) -> BatchStatus:
        with self._translate_errors():
            batch = self.client.batches.retrieve(handle.batch_id)
        return _status(batch)

    def batch_results(self, handle: BatchHandle) -> list[BatchItemResult]:
        with self._translate_errors():
            batch = self.client.batches.retrieve(handle.batch_id)
            status = _status(batch)
            if not status.is_terminal:
                raise ProviderError(
                    self._name,
                    None,
                    f"batch {handle.batch_id} is still {batch.status}: results can be read "
                    "once batch_status() reports a terminal state.",
                    reached_provider=True,
                )
            rows: dict[str, BatchItemResult] = {}
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    for line in self.client.files.content(file_id).text.splitlines():
                        if line.strip():
                            item = _item(json.loads(line))
                            rows[item.id] = item
        ids = handle.request_ids or tuple(rows)
        missing = f"no result for this request (batch {batch.status})"
        return [rows.get(rid) or BatchItemResult(id=rid, ok=False, error=missing) for rid in ids]

    def batch_cancel(self, handle: BatchHandle) -> BatchStatus:
        with self._translate_errors():
            batch = self.client.batches.cancel(handle.batch_id)
        return _status(batch)

    # ------------------------------------------------------------------ errors

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except ProviderError:
            raise
        except Exception as exc:
            mapped = _map_error(exc, self._name)
            if mapped is None:
                raise
            raise mapped from exc


def _map_error(exc: Exception, provider: str) -> ProviderError | None:
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body: Mapping[str, Any] = exc.body if isinstance(exc.body, Mapping) else {}
        nested = body.get("error")
        error: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
        message = str(error.get("message") or exc.message)
        retry_after = retry_after_from_headers(exc.response.headers)
        # 429 "insufficient_quota" is a billing problem: retrying cannot help.
        transient = (
            status in (408, 409, 429) or status >= 500
        ) and exc.code != "insufficient_quota"
        kind = TransientProviderError if transient else ProviderError
        return kind(provider, status, message, retry_after)
    if isinstance(exc, openai.APITimeoutError):
        return TransientProviderError(provider, None, "request timed out", reached_provider=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return TransientProviderError(
            provider,
            None,
            f"connection error: {type(cause).__name__}: {cause}",
            reached_provider=False,
        )
    if isinstance(exc, openai.OpenAIError):
        return ProviderError(provider, None, str(exc), reached_provider=False)
    return None


def _usage_fields(usage: CompletionUsage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
    details = usage.completion_tokens_details
    reasoning = details.reasoning_tokens if details else None
    cost = (usage.model_extra or {}).get("cost")
    return {
        "input_tokens": usage.prompt_tokens or 0,
        "output_tokens": usage.completion_tokens or 0,
        "cached_tokens": cached or 0,
        "reasoning_tokens": reasoning or 0,
        "reported_cost": float(cost) if isinstance(cost, (int, float)) else None,
    }


def _status(batch: Batch) -> BatchStatus:
    counts = batch.request_counts
    error = None
    if batch.errors and batch.errors.data:
        error = "; ".join(e.message or e.code or "error" for e in batch.errors.data)
    return BatchStatus(
        state=_STATES.get(batch.status, BatchState.RUNNING),
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        provider_state=batch.status,
        error=error,
    )


def _item(line: Mapping[str, Any]) -> BatchItemResult:
    """One line of a batch output or error file."""
    rid = str(line.get("custom_id"))
    response = line.get("response") or {}
    body = response.get("body") or {}
    if line.get("error") or response.get("status_code") != 200:
        error = line.get("error") or body.get("error") or {}
        message = error.get("message") if isinstance(error, Mapping) else str(error)
        return BatchItemResult(
            id=rid, ok=False, error=message or f"HTTP {response.get('status_code')}"
        )
    choices = body.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    return BatchItemResult(
        id=rid,
        ok=True,
        text=text,
        parsed=parse_json_text(text),
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning_tokens=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        or 0,
    )


def _schema_name(schema: Mapping[str, Any]) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "output"))
    return name[:64] or "output"


def _strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts the schema: every object closed and fully required."""
    if isinstance(schema, Mapping):
        props = schema.get("properties")
        if isinstance(props, Mapping) and (
            schema.get("additionalProperties") is not False
            or set(schema.get("required") or ()) != set(props)
        ):
            return False
        return all(_strict_compatible(v) for v in schema.values())
    if isinstance(schema, list):
        return all(_strict_compatible(v) for v in schema)
    return True


def _from_epoch(seconds: int | float | None) -> datetime:
    if not seconds:
        return datetime.now(timezone.utc)
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
