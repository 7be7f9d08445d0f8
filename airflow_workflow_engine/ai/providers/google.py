"""Google Gemini (the Gemini Developer API) through the official ``google-genai`` SDK.

The SDK is imported on first use, never at module import. Its own retries are switched off
(``HttpRetryOptions(attempts=1)``): the engine's retry layer retries and records each attempt.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.ai.deterministic import count_tokens
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
    ChatMessage,
    EmbeddingResponse,
    Messages,
    ProviderResponse,
    StreamChunk,
    check_batch_requests,
    idempotency_tag,
    parse_json_text,
    read_safely,
    split_system,
)

if TYPE_CHECKING:
    from google.genai import Client, types

__all__ = ["GoogleAdapter"]

_EMBED_CHUNK = 100  # contents per batchEmbedContents request (the API's limit)
_STATES = {
    "JOB_STATE_UNSPECIFIED": BatchState.PENDING,
    "JOB_STATE_QUEUED": BatchState.PENDING,
    "JOB_STATE_PENDING": BatchState.PENDING,
    "JOB_STATE_PAUSED": BatchState.PENDING,
    "JOB_STATE_RUNNING": BatchState.RUNNING,
    "JOB_STATE_UPDATING": BatchState.RUNNING,
    "JOB_STATE_CANCELLING": BatchState.RUNNING,
    "JOB_STATE_SUCCEEDED": BatchState.COMPLETED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": BatchState.COMPLETED,
    "JOB_STATE_FAILED": BatchState.FAILED,
    "JOB_STATE_CANCELLED": BatchState.CANCELLED,
    "JOB_STATE_EXPIRED": BatchState.EXPIRED,
}
_DEAD_STATES = {BatchState.FAILED, BatchState.CANCELLED, BatchState.EXPIRED}
_DURATION = re.compile(r"^\s*([0-9.]+)s\s*$")


class GoogleAdapter:
    """:class:`~airflow_workflow_engine.ai.providers.base.ProviderAdapter` for Gemini.

    Args:
        api_key: defaults to ``GEMINI_API_KEY``, then ``GOOGLE_API_KEY``.
        base_url: defaults to ``GEMINI_BASE_URL``, else Google's endpoint.
        api_version: e.g. ``"v1beta"``; the SDK's default when ``None``.
        batch_scan_limit: how many recent batches :meth:`batch_find` looks through.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout: float = 120.0,
        provider_name: str = "google",
        batch_scan_limit: int = 200,
        client: Client | None = None,
    ) -> None:
        self._name = provider_name
        key = api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        if not key and client is None:
            raise ProviderConfigError(
                provider_name,
                "no API key: pass api_key=..., set GEMINI_API_KEY (or GOOGLE_API_KEY), or "
                "configure the Airflow connection.",
            )
        self._api_key = key or ""
        self._base_url = base_url or os.environ.get("GEMINI_BASE_URL") or None
        self._api_version = api_version
        self._timeout = timeout
        self._batch_scan_limit = batch_scan_limit
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:  # never show the key
        return f"GoogleAdapter(provider_name={self._name!r}, base_url={self._base_url!r})"

    @property
    def client(self) -> Client:
        """The SDK client, created (and ``google.genai`` imported) on first use."""
        with self._client_lock:
            if self._client is None:
                try:
                    from google import genai
                    from google.genai import types
                except ImportError as exc:
                    raise ProviderConfigError(
                        self._name,
                        "the 'google-genai' package is not installed: "
                        "pip install 'airflow-workflow-engine[google]'",
                    ) from exc
                options = types.HttpOptions(
                    base_url=self._base_url,
                    api_version=self._api_version,
                    timeout=int(self._timeout * 1000),
                    retry_options=types.HttpRetryOptions(attempts=1),
                )
                self._client = genai.Client(api_key=self._api_key, http_options=options)
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
        contents, config = self._request(messages, system, temperature, max_tokens, json_schema)
        with self._translate_errors():
            response = self.client.models.generate_content(
                model=model_id, contents=contents, config=config
            )
        try:
            return self._response(response, model_id, structured=json_schema is not None)
        except Exception as exc:  # answered and billed: keep what can be read for the ledger
            raise AnswerReadError(
                self._name,
                exc,
                usage=read_safely(lambda: _usage_fields(response.usage_metadata)),
                model_id=read_safely(lambda: response.model_version) or None,
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
        """Sends the request and reads the first chunk at once (so errors surface here, inside
        a retry wrapper), then yields text deltas and a final chunk with the usage."""
        contents, config = self._request(messages, system, temperature, max_tokens, json_schema)
        with self._translate_errors():
            events = iter(
                self.client.models.generate_content_stream(
                    model=model_id, contents=contents, config=config
                )
            )
            first = next(events, None)
        return self._stream_chunks(first, events, model_id, structured=json_schema is not None)

    def _stream_chunks(
        self,
        first: types.GenerateContentResponse | None,
        events: Iterator[types.GenerateContentResponse],
        model_id: str,
        *,
        structured: bool,
    ) -> Iterator[StreamChunk]:
        parts: list[str] = []
        last: types.GenerateContentResponse | None = None
        usage: types.GenerateContentResponseUsageMetadata | None = None
        finish: str | None = None
        with self._translate_errors():
            chunk = first
            while chunk is not None:
                last = chunk
                usage = chunk.usage_metadata or usage
                finish = _finish_reason(chunk) or finish
                delta = _text(chunk)
                if delta:
                    parts.append(delta)
                    yield StreamChunk(delta=delta)
                chunk = next(events, None)
        text = "".join(parts)
        yield StreamChunk(
            final=ProviderResponse(
                provider=self._name,
                model_id=(last.model_version if last else None) or model_id,
                text=text,
                parsed=parse_json_text(text) if structured else None,
                finish_reason=finish,
                response_id=last.response_id if last else None,
                **_usage_fields(usage),
            )
        )

    def _request(
        self,
        messages: Messages,
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
        json_schema: Mapping[str, Any] | None,
    ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        from google.genai import types

        system_text, conversation = split_system(messages, system)
        config = types.GenerateContentConfig(
            system_instruction=system_text,
            temperature=temperature,
            max_output_tokens=max_tokens,
        )
        if json_schema is not None:
            config.response_mime_type = "application/json"
            config.response_json_schema = dict(json_schema)
        return _contents(conversation), config

    def _response(
        self, response: types.GenerateContentResponse, model_id: str, *, structured: bool
    ) -> ProviderResponse:
        text = _text(response)
        finish = _finish_reason(response)
        feedback = response.prompt_feedback
        if not response.candidates and feedback is not None and feedback.block_reason:
            finish = f"BLOCKED:{_enum_name(feedback.block_reason)}"
        return ProviderResponse(
            provider=self._name,
            model_id=response.model_version or model_id,
            text=text,
            parsed=parse_json_text(text) if structured else None,
            finish_reason=finish,
            response_id=response.response_id,
            **_usage_fields(response.usage_metadata),
        )

    # ------------------------------------------------------------------ embeddings

    def embed(
        self, model_id: str, texts: Sequence[str], *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        from google.genai import types

        config = types.EmbedContentConfig(output_dimensionality=dimensions) if dimensions else None
        vectors: list[list[float]] = []
        tokens, estimated = 0, False
        for start in range(0, len(texts), _EMBED_CHUNK):
            chunk = list(texts[start : start + _EMBED_CHUNK])
            with self._translate_errors():
                response = self.client.models.embed_content(
                    model=model_id, contents=chunk, config=config
                )
            vectors += [list(e.values or []) for e in response.embeddings or []]
            usage = response.usage_metadata
            if usage is not None and usage.prompt_token_count is not None:
                tokens += usage.prompt_token_count
            else:  # the Gemini API does not always report embedding usage
                tokens += sum(max(count_tokens(t), 1) for t in chunk)
                estimated = True
        return EmbeddingResponse(
            provider=self._name,
            model_id=model_id,
            vectors=vectors,
            input_tokens=tokens,
            tokens_estimated=estimated,
        )

    # ------------------------------------------------------------------ batches

    def batch_submit(
        self, model_id: str, requests: Sequence[BatchRequest], *, idempotency_key: str
    ) -> BatchHandle:
        """Creates a batch job with inlined requests, its ``display_name`` derived from
        ``idempotency_key``. A live or completed job with that name is returned instead, so a
        crashed and retried submit does not pay twice."""
        from google.genai import types

        ids = check_batch_requests(requests)
        existing = self.batch_find(idempotency_key)
        if existing is not None and self.batch_status(existing).state not in _DEAD_STATES:
            return existing.model_copy(update={"request_ids": ids, "model_id": model_id})
        inlined = []
        for request in requests:
            contents, config = self._request(
                request.chat_messages(),
                request.system,
                request.temperature,
                request.max_tokens,
                request.json_schema,
            )
            inlined.append(
                types.InlinedRequest(contents=contents, config=config, metadata={"key": request.id})
            )
        with self._translate_errors():
            job = self.client.batches.create(
                model=model_id,
                src=inlined,
                config=types.CreateBatchJobConfig(display_name=idempotency_tag(idempotency_key)),
            )
        return BatchHandle(
            provider=self._name,
            model_id=model_id,
            batch_id=job.name or "",
            request_ids=ids,
            submitted_at=job.create_time or datetime.now(timezone.utc),
            idempotency_key=idempotency_key,
        )

    def batch_find(self, idempotency_key: str) -> BatchHandle | None:
        """The newest job whose ``display_name`` matches ``idempotency_key``, in any state.
        Gemini does not return a job's inlined requests, so ``request_ids`` is empty: results
        then come back in the job's order, keyed by the ids sent as request metadata."""
        from google.genai import types

        tag = idempotency_tag(idempotency_key)
        found: types.BatchJob | None = None
        with self._translate_errors():
            pager = self.client.batches.list(config=types.ListBatchJobsConfig(page_size=100))
            for scanned, job in enumerate(pager):
                if scanned >= self._batch_scan_limit:
                    break
                if job.display_name != tag:
                    continue
                if found is None or _created(job) > _created(found):
                    found = job
        if found is None:
            return None
        return BatchHandle(
            provider=self._name,
            model_id=(found.model or "").removeprefix("models/"),
            batch_id=found.name or "",
            submitted_at=_created(found),
            idempotency_key=idempotency_key,
        )

    def batch_status(self, handle: BatchHandle) -> BatchStatus:
        with self._translate_errors():
            job = self.client.batches.get(name=handle.batch_id)
        return _status(job, handle)

    def batch_results(self, handle: BatchHandle) -> list[BatchItemResult]:
        with self._translate_errors():
            job = self.client.batches.get(name=handle.batch_id)
        status = _status(job, handle)
        if not status.is_terminal:
            raise ProviderError(
                self._name,
                None,
                f"batch {handle.batch_id} is still {status.provider_state}: results can be "
                "read once batch_status() reports a terminal state.",
                reached_provider=True,
            )
        if job.dest is not None and job.dest.file_name and not job.dest.inlined_responses:
            raise ProviderError(
                self._name,
                None,
                f"batch {handle.batch_id} wrote its results to file {job.dest.file_name}; "
                "only inlined results are supported (submit with batch_submit).",
                reached_provider=True,
            )
        rows: dict[str, BatchItemResult] = {}
        responses = (job.dest.inlined_responses if job.dest else None) or []
        for index, inlined in enumerate(responses):
            fallback = handle.request_ids[index] if index < len(handle.request_ids) else str(index)
            rid = (inlined.metadata or {}).get("key") or fallback
            rows[rid] = _item(rid, inlined)
        ids = handle.request_ids or tuple(rows)
        missing = f"no result for this request (batch {status.provider_state})"
        return [rows.get(rid) or BatchItemResult(id=rid, ok=False, error=missing) for rid in ids]

    def batch_cancel(self, handle: BatchHandle) -> BatchStatus:
        with self._translate_errors():
            self.client.batches.cancel(name=handle.batch_id)
        return self.batch_status(handle)

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
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        status = int(exc.code) if exc.code else None
        retry_after = _retry_after(exc)
        transient = status is None or status in (408, 429) or status >= 500
        kind = TransientProviderError if transient else ProviderError
        return kind(provider, status, str(exc.message or exc.status or exc), retry_after)
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("httpx")}
    if "TransportError" in names:  # httpx / httpx2: timeouts, connection and protocol errors
        connect = bool(names & {"ConnectError", "ConnectTimeout"})
        return TransientProviderError(
            provider,
            None,
            f"{'connection' if connect else 'transport'} error: {type(exc).__name__}: {exc}",
            reached_provider=not connect,
        )
    return None


def _retry_after(exc: Any) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    from_header = retry_after_from_headers(headers)
    if from_header is not None:
        return from_header
    details = exc.details if isinstance(exc.details, Mapping) else {}
    error = details.get("error", details)
    for detail in (error.get("details") or []) if isinstance(error, Mapping) else []:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _contents(conversation: Sequence[ChatMessage]) -> list[types.Content]:
    from google.genai import types

    return [
        types.Content(
            role="model" if m.role == "assistant" else "user", parts=[types.Part(text=m.content)]
        )
        for m in conversation
    ]


def _text(response: types.GenerateContentResponse) -> str:
    """The answer's text parts, without thoughts (``response.text`` warns on other parts)."""
    if not response.candidates or response.candidates[0].content is None:
        return ""
    parts = response.candidates[0].content.parts or []
    return "".join(p.text for p in parts if p.text and not p.thought)


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))


def _finish_reason(response: types.GenerateContentResponse) -> str | None:
    if not response.candidates or response.candidates[0].finish_reason is None:
        return None
    return _enum_name(response.candidates[0].finish_reason)


def _usage_fields(usage: types.GenerateContentResponseUsageMetadata | None) -> dict[str, Any]:
    if usage is None:
        return {}
    thoughts = usage.thoughts_token_count or 0
    return {
        "input_tokens": usage.prompt_token_count or 0,
        "output_tokens": (usage.candidates_token_count or 0) + thoughts,
        "cached_tokens": usage.cached_content_token_count or 0,
        "reasoning_tokens": thoughts,
    }


def _created(job: types.BatchJob) -> datetime:
    return job.create_time or datetime.min.replace(tzinfo=timezone.utc)


def _status(job: types.BatchJob, handle: BatchHandle) -> BatchStatus:
    state_name = _enum_name(job.state) if job.state is not None else "JOB_STATE_UNSPECIFIED"
    responses = (job.dest.inlined_responses if job.dest else None) or []
    failed = sum(1 for r in responses if r.error is not None)
    return BatchStatus(
        state=_STATES.get(state_name, BatchState.RUNNING),
        total=len(handle.request_ids) or len(responses),
        completed=len(responses) - failed,
        failed=failed,
        provider_state=state_name,
        error=job.error.message if job.error else None,
    )


def _item(rid: str, inlined: types.InlinedResponse) -> BatchItemResult:
    if inlined.error is not None or inlined.response is None:
        message = inlined.error.message if inlined.error else None
        return BatchItemResult(id=rid, ok=False, error=message or "no response")
    text = _text(inlined.response)
    return BatchItemResult(
        id=rid,
        ok=True,
        text=text,
        parsed=parse_json_text(text),
        **_usage_fields(inlined.response.usage_metadata),
    )
