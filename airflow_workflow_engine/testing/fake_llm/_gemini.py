"""The Gemini (Generative Language) REST API routes of the fake, as the ``google-genai`` SDK
calls them: ``generateContent`` (plain, structured, streamed), embeddings, models and inline
batches (``batchGenerateContent``, poll, cancel, list)."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_workflow_engine.testing.fake_llm._script import (
    FINAL_STATES,
    Batch,
    BatchItem,
    Completion,
    FakeState,
    must,
)
from airflow_workflow_engine.testing.fake_llm._wire import (
    HTTPError,
    Reply,
    format_seconds,
    iso,
    json_reply,
    pieces,
    require_obj,
    sse_reply,
)

_EMBEDDING_DIMS = {"gemini-embedding-001": 3072}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GeminiRoutes:
    """Answers ``/v1beta/...`` (or ``/v1/...``) requests of the ``google-genai`` SDK from the
    shared :class:`FakeState` (called under the server's lock)."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    def handle(self, method: str, path: str, query: Mapping[str, str], payload: Any) -> Reply:
        rest = path.strip("/").split("/", 1)[1] if "/" in path.strip("/") else ""
        if method == "GET" and rest == "models":
            names = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"]
            return json_reply({"models": [{"name": f"models/{n}"} for n in names]})
        if rest.startswith("models/") and ":" in rest and method == "POST":
            model, action = rest.removeprefix("models/").rsplit(":", 1)
            body = require_obj(payload)
            if action == "generateContent":
                return json_reply(self._generate(model, body))
            if action == "streamGenerateContent":
                return self._stream(model, body)
            if action == "embedContent":
                return json_reply(self._embed(model, [body], single=True))
            if action == "batchEmbedContents":
                return json_reply(self._embed(model, body.get("requests") or [], single=False))
            if action == "batchGenerateContent":
                return json_reply(self._create_batch(model, body))
        if rest == "batches" and method == "GET":
            return json_reply(self._list_batches(query))
        if rest.startswith("batches/"):
            name, _, action = rest.partition(":")
            batch = self.state.batches.get(name)
            if batch is None or batch.provider != "google":
                raise HTTPError(404, f"Batch '{name}' not found.")
            if method == "GET" and not action:
                self.state.advance(batch)
                return json_reply(self._batch_json(batch))
            if method == "POST" and action == "cancel":
                if batch.state not in FINAL_STATES:
                    batch.cancel_requested = True
                return json_reply({})
        raise HTTPError(404, f"Method not found: {method} {path}")

    def _completion(self, body: Mapping[str, Any]) -> Completion:
        contents = body.get("contents") or []
        if not contents:
            raise HTTPError(400, "* GenerateContentRequest.contents: contents is not specified")
        texts = [(str(c.get("role") or "user"), _parts_text(c)) for c in contents]
        system = body.get("systemInstruction") or body.get("system_instruction")
        system_text = _parts_text(system) if isinstance(system, Mapping) else ""
        prompt = next((t for role, t in reversed(texts) if role == "user"), texts[-1][1])
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        return self.state.complete(
            "google",
            prompt,
            "\n".join([system_text, *(t for _, t in texts)]),
            want_json=config.get("responseMimeType") == "application/json",
            schema=schema,
            max_tokens=config.get("maxOutputTokens"),
        )

    def _response(
        self,
        model: str,
        completion: Completion,
        text: str | None = None,
        *,
        final: bool = True,
        output_tokens: int | None = None,
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {
                "parts": [{"text": completion.text if text is None else text}],
                "role": "model",
            },
            "index": 0,
        }
        if final:
            reason = completion.finish_reason
            candidate["finishReason"] = _FINISH.get(reason, reason.upper())
        out = completion.output_tokens if output_tokens is None else output_tokens
        usage: dict[str, Any] = {
            "promptTokenCount": completion.input_tokens,
            "candidatesTokenCount": out,
            "totalTokenCount": completion.input_tokens + out + completion.reasoning_tokens,
            "cachedContentTokenCount": completion.cached_tokens,
        }
        if completion.reasoning_tokens:
            usage["thoughtsTokenCount"] = completion.reasoning_tokens
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": self.state.next_id("fake-response-"),
        }

    def _generate(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._response(model, self._completion(body))

    def _stream(self, model: str, body: Mapping[str, Any]) -> Reply:
        completion = self._completion(body)
        deltas = pieces(completion.text) or [""]
        events, produced = [], 0
        for index, piece in enumerate(deltas):
            final = index == len(deltas) - 1
            produced = (
                completion.output_tokens
                if final
                else min(produced + len(piece.split()), completion.output_tokens)
            )
            events.append(
                self._response(model, completion, piece, final=final, output_tokens=produced)
            )
        return sse_reply(events, b"\r\n\r\n")

    def _embed(self, model: str, requests: Iterable[Any], *, single: bool) -> dict[str, Any]:
        from airflow_workflow_engine.ai import deterministic

        vectors, tokens = [], 0
        default_dims = _EMBEDDING_DIMS.get(model, 768)
        for request in requests:
            text = _parts_text(request.get("content") or {})
            dims = int(request.get("outputDimensionality") or default_dims)
            vectors.append({"values": deterministic.hash_embedding(text, dims)})
            tokens += max(deterministic.count_tokens(text), 1)
        if not vectors:
            raise HTTPError(400, "* BatchEmbedContentsRequest.requests: must not be empty")
        usage = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        if single:
            return {"embedding": vectors[0], "usageMetadata": usage}
        return {"embeddings": vectors, "usageMetadata": usage}

    def _create_batch(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        spec = require_obj(body.get("batch"))
        input_config = spec.get("inputConfig") or {}
        requests = (input_config.get("requests") or {}).get("requests") or []
        if not requests:
            raise HTTPError(400, "* batch.input_config: inlined requests are required")
        items = []
        for index, entry in enumerate(requests):
            key = str((entry.get("metadata") or {}).get("key", index))
            error = self.state.failing_items["google"].get(key)
            completion = None
            if error is None:
                completion = self._completion(require_obj(entry.get("request")))
            items.append(BatchItem(key, completion, error, model))
        batch = self.state.new_batch(
            "google",
            self.state.next_id("batches/fakebatch"),
            f"models/{model}",
            items=items,
            display_name=spec.get("displayName"),
        )
        return self._batch_json(batch)

    def _batch_json(self, batch: Batch) -> dict[str, Any]:
        state = {
            "pending": "BATCH_STATE_PENDING",
            "running": "BATCH_STATE_RUNNING",
            "completed": "BATCH_STATE_SUCCEEDED",
            "failed": "BATCH_STATE_FAILED",
            "expired": "BATCH_STATE_EXPIRED",
            "cancelled": "BATCH_STATE_CANCELLED",
        }[batch.state]
        done = batch.state in ("completed", "failed", "expired", "cancelled")
        failed = sum(1 for i in batch.items if i.error is not None)
        finished = len(batch.items) if batch.state == "completed" else 0
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": batch.id,
            "model": batch.model,
            "displayName": batch.display_name or "",
            "createTime": iso(batch.created_at),
            "updateTime": iso(batch.finished_at or batch.created_at),
            "state": state,
            "batchStats": {
                "requestCount": str(len(batch.items)),
                "successfulRequestCount": str(finished - failed if finished else 0),
                "failedRequestCount": str(failed if finished else 0),
                "pendingRequestCount": str(len(batch.items) - finished),
            },
        }
        operation: dict[str, Any] = {"name": batch.id, "metadata": meta}
        if batch.finished_at is not None:
            meta["endTime"] = iso(batch.finished_at)
        if batch.state == "completed":
            responses = []
            for item in batch.items:
                entry: dict[str, Any] = {"metadata": {"key": item.key}}
                if item.error is not None:
                    entry["error"] = {"code": 3, "message": item.error}
                else:
                    entry["response"] = self._response(item.model, must(item.completion))
                responses.append(entry)
            output = {"inlinedResponses": {"inlinedResponses": responses}}
            meta["output"] = output
            operation["response"] = {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                "GenerateContentBatchOutput",
                **output,
            }
        elif batch.state == "failed":
            operation["error"] = {"code": 13, "message": "The batch failed (scripted)."}
        if done:
            operation["done"] = True
        return operation

    def _list_batches(self, query: Mapping[str, str]) -> dict[str, Any]:
        batches = [b for b in self.state.batches.values() if b.provider == "google"]
        batches.reverse()
        start = int(query.get("pageToken") or 0)
        size = int(query.get("pageSize") or 50)
        page = batches[start : start + size]
        result: dict[str, Any] = {"operations": [self._batch_json(b) for b in page]}
        if start + size < len(batches):
            result["nextPageToken"] = str(start + size)
        return result


def _parts_text(content: Any) -> str:
    if not isinstance(content, Mapping):
        return ""
    parts = content.get("parts") or []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping))


def error_reply(status: int, message: str, retry_after: float | None) -> Reply:
    """A Google-RPC-shaped error, with ``Retry-After`` and a ``RetryInfo`` detail when given."""
    headers: list[tuple[str, str]] = []
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "UNKNOWN"),
    }
    if retry_after is not None:
        headers.append(("Retry-After", format_seconds(retry_after)))
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{format_seconds(retry_after)}s",
            }
        ]
    return Reply(status, jsonlib.dumps({"error": error}).encode(), headers)
