"""The OpenAI REST API routes of the fake: chat completions (plain, structured, streamed),
embeddings, models, files (upload, metadata, content) and batches (create, poll, cancel,
list; output and error files written when a batch completes)."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json as jsonlib
import struct
import time
from collections.abc import Mapping
from typing import Any

from airflow_workflow_engine.testing.fake_llm._script import (
    FINAL_STATES,
    Batch,
    BatchItem,
    Completion,
    FakeState,
    File,
    RecordedRequest,
    must,
)
from airflow_workflow_engine.testing.fake_llm._wire import (
    HTTPError,
    Reply,
    format_seconds,
    json_reply,
    pieces,
    require_obj,
    sse_reply,
)

_EMBEDDING_DIMS = {"text-embedding-3-large": 3072}
_ERROR_TYPE = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


class OpenAIRoutes:
    """Answers ``/v1/...`` requests of the ``openai`` SDK from the shared :class:`FakeState`
    (called under the server's lock)."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    def handle(self, req: RecordedRequest) -> Reply:
        segs = req.path.strip("/").split("/")[1:]  # drop "v1"
        route = (req.method, *segs)
        if route == ("POST", "chat", "completions"):
            return self._chat(require_obj(req.json))
        if route == ("POST", "embeddings"):
            return json_reply(self._embeddings(require_obj(req.json)))
        if route == ("GET", "models"):
            models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
            return json_reply({"object": "list", "data": [_model_json(m) for m in models]})
        if segs[:1] == ["files"]:
            return self._files_route(req, segs)
        if segs[:1] == ["batches"]:
            return self._batches_route(req, segs)
        raise HTTPError(404, f"Invalid URL ({req.method} {req.path})")

    def _files_route(self, req: RecordedRequest, segs: list[str]) -> Reply:
        if req.method == "POST" and len(segs) == 1:
            return self._upload(req.headers.get("content-type", ""), req.body)
        if req.method == "GET" and len(segs) in (2, 3):
            file = self.state.files.get(segs[1])
            if file is None:
                raise HTTPError(404, f"No such File object: {segs[1]}")
            if segs[2:] == ["content"]:
                return Reply(200, file.content, content_type="application/octet-stream")
            if len(segs) == 2:
                return json_reply(_file_json(file))
        raise HTTPError(404, f"Invalid URL ({req.method} {req.path})")

    def _batches_route(self, req: RecordedRequest, segs: list[str]) -> Reply:
        if len(segs) == 1:
            if req.method == "POST":
                return json_reply(self._create_batch(require_obj(req.json)))
            return json_reply(self._list_batches(req.query))
        batch = self.state.batches.get(segs[1])
        if batch is None or batch.provider != "openai":
            raise HTTPError(404, f"No batch found with id '{segs[1]}'.")
        if req.method == "GET" and len(segs) == 2:
            if self.state.advance(batch):
                self.finish_batch(batch)
            return json_reply(_batch_json(batch))
        if req.method == "POST" and segs[2:] == ["cancel"]:
            if batch.state not in FINAL_STATES:
                batch.cancel_requested = True
            return json_reply(_batch_json(batch, cancelling=batch.cancel_requested))
        raise HTTPError(404, f"Invalid URL ({req.method} {req.path})")

    def _chat_completion(self, body: Mapping[str, Any]) -> tuple[str, Completion]:
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "'messages' must be a non-empty array.")
        texts = [(str(m.get("role")), _content_text(m.get("content"))) for m in messages]
        prompt = next((t for role, t in reversed(texts) if role == "user"), texts[-1][1])
        fmt = body.get("response_format") or {}
        schema = None
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
        completion = self.state.complete(
            "openai",
            prompt,
            "\n".join(t for _, t in texts),
            want_json=fmt.get("type") in ("json_schema", "json_object"),
            schema=schema,
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        )
        return str(body.get("model") or "gpt-fake"), completion

    def _chat(self, body: Mapping[str, Any]) -> Reply:
        model, completion = self._chat_completion(body)
        response_id = self.state.next_id("chatcmpl-fake")
        if not body.get("stream"):
            return json_reply(chat_json(response_id, model, completion))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            if include_usage:
                data["usage"] = None
            return data

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": piece}, None) for piece in pieces(completion.text)]
        events.append(chunk({}, completion.finish_reason))
        if include_usage:
            events.append(
                {
                    "id": response_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(completion),
                }
            )
        return sse_reply(events, b"\n\n", trailer=b"data: [DONE]\n\n")

    def _embeddings(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from airflow_workflow_engine.ai import deterministic

        model = str(body.get("model") or "text-embedding-3-small")
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        if not inputs:
            raise HTTPError(400, "'input' must not be empty.")
        texts = [x if isinstance(x, str) else jsonlib.dumps(x) for x in inputs]
        dims = int(body.get("dimensions") or _EMBEDDING_DIMS.get(model, 1536))
        data = []
        for index, text in enumerate(texts):
            vector = deterministic.hash_embedding(text, dims)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(max(deterministic.count_tokens(t), 1) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _upload(self, content_type: str, body: bytes) -> Reply:
        fields, files = _parse_multipart(content_type, body)
        if "file" not in files:
            raise HTTPError(400, "Missing 'file' in multipart body.")
        filename, content = files["file"]
        file = File(
            id=self.state.next_id("file-fake"),
            filename=filename,
            purpose=fields.get("purpose", "batch"),
            content=content,
            created_at=int(time.time()),
        )
        self.state.files[file.id] = file
        return json_reply(_file_json(file))

    def _create_batch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        file = self.state.files.get(str(body.get("input_file_id")))
        if file is None:
            raise HTTPError(400, f"Input file '{body.get('input_file_id')}' does not exist.")
        endpoint = str(body.get("endpoint") or "/v1/chat/completions")
        metadata = body.get("metadata") or {}
        if len(metadata) > 16 or any(len(str(v)) > 512 for v in metadata.values()):
            raise HTTPError(400, "metadata: at most 16 pairs, values up to 512 characters.")
        items: list[BatchItem] = []
        models: set[str] = set()
        for number, line in enumerate(file.content.decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = jsonlib.loads(line)
            except ValueError as exc:
                raise HTTPError(400, f"Line {number} of the input file is not JSON.") from exc
            if entry.get("url") != endpoint or "custom_id" not in entry:
                raise HTTPError(400, f"Line {number}: needs custom_id and url '{endpoint}'.")
            items.append(self._batch_item(entry, endpoint))
            models.add(items[-1].model)
        if not items:
            raise HTTPError(400, "The input file is empty.")
        batch = self.state.new_batch(
            "openai",
            self.state.next_id("batch_fake"),
            sorted(models)[0],
            items=items,
            metadata={str(k): str(v) for k, v in metadata.items()},
            input_file_id=file.id,
            endpoint=endpoint,
            completion_window=str(body.get("completion_window") or "24h"),
        )
        return _batch_json(batch)

    def _batch_item(self, entry: Mapping[str, Any], endpoint: str) -> BatchItem:
        key = str(entry["custom_id"])
        request = require_obj(entry.get("body"))
        model = str(request.get("model") or "gpt-fake")
        error = self.state.failing_items["openai"].get(key)
        if error is not None:
            return BatchItem(key, None, error, model)
        if endpoint == "/v1/embeddings":
            return BatchItem(key, None, None, model, embedding=self._embeddings(request))
        _, completion = self._chat_completion(request)
        return BatchItem(key, completion, None, model)

    def finish_batch(self, batch: Batch) -> None:
        if batch.state != "completed":
            return
        ok_lines, error_lines = [], []
        for item in batch.items:
            line: dict[str, Any] = {
                "id": self.state.next_id("batch_req_fake"),
                "custom_id": item.key,
                "error": None,
            }
            request_id = self.state.next_id("req_fake")
            if item.error is not None:
                body = {"error": error_body(400, item.error)["error"]}
                line["response"] = {"status_code": 400, "request_id": request_id, "body": body}
                error_lines.append(line)
                continue
            body = item.embedding or chat_json(
                self.state.next_id("chatcmpl-fake"), item.model, must(item.completion)
            )
            line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
            ok_lines.append(line)
        for lines, attr in ((ok_lines, "output_file_id"), (error_lines, "error_file_id")):
            if lines:
                file = File(
                    id=self.state.next_id("file-fake"),
                    filename=f"{batch.id}_{attr.split('_')[0]}.jsonl",
                    purpose="batch_output",
                    content="".join(jsonlib.dumps(x) + "\n" for x in lines).encode(),
                    created_at=int(time.time()),
                )
                self.state.files[file.id] = file
                setattr(batch, attr, file.id)

    def _list_batches(self, query: Mapping[str, str]) -> dict[str, Any]:
        batches = [b for b in self.state.batches.values() if b.provider == "openai"]
        batches.sort(
            key=lambda b: (b.created_at, int(b.id.removeprefix("batch_fake"))), reverse=True
        )
        if "after" in query:
            ids = [b.id for b in batches]
            start = ids.index(query["after"]) + 1 if query["after"] in ids else len(ids)
            batches = batches[start:]
        limit = int(query.get("limit", 20))
        page = batches[:limit]
        return {
            "object": "list",
            "data": [_batch_json(b) for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(batches) > limit,
        }


def error_body(status: int, message: str) -> dict[str, Any]:
    kind, code = _ERROR_TYPE.get(status, ("server_error" if status >= 500 else "error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _usage(c: Completion) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": c.input_tokens,
        "completion_tokens": c.output_tokens,
        "total_tokens": c.input_tokens + c.output_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": c.reasoning_tokens, "audio_tokens": 0},
    }
    if c.cost is not None:
        usage["cost"] = c.cost
    return usage


def chat_json(response_id: str, model: str, c: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": c.text,
        "refusal": None,
        "annotations": [],
    }
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {"index": 0, "message": message, "finish_reason": c.finish_reason, "logprobs": None}
        ],
        "usage": _usage(c),
    }


def _model_json(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake"}


def _file_json(file: File) -> dict[str, Any]:
    return {
        "id": file.id,
        "object": "file",
        "bytes": len(file.content),
        "created_at": file.created_at,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def _batch_json(batch: Batch, *, cancelling: bool = False) -> dict[str, Any]:
    status = {
        "pending": "validating",
        "running": "in_progress",
        "completed": "completed",
        "failed": "failed",
        "expired": "expired",
        "cancelled": "cancelled",
    }[batch.state]
    if cancelling and batch.state in ("pending", "running"):
        status = "cancelling"
    total = len(batch.items)
    failed = sum(1 for i in batch.items if i.error is not None) if batch.state == "completed" else 0
    done = total - failed if batch.state == "completed" else 0
    data: dict[str, Any] = {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_at,
        "in_progress_at": batch.created_at if batch.polls else None,
        "expires_at": batch.created_at + 24 * 3600,
        "finalizing_at": None,
        "completed_at": batch.finished_at if batch.state == "completed" else None,
        "failed_at": batch.finished_at if batch.state == "failed" else None,
        "expired_at": batch.finished_at if batch.state == "expired" else None,
        "cancelling_at": batch.created_at if batch.cancel_requested else None,
        "cancelled_at": batch.finished_at if batch.state == "cancelled" else None,
        "request_counts": {"total": total, "completed": done, "failed": failed},
        "metadata": batch.metadata or None,
    }
    if batch.state == "failed":
        data["errors"] = {
            "object": "list",
            "data": [
                {
                    "code": "batch_failed",
                    "message": "The batch failed (scripted).",
                    "line": None,
                    "param": None,
                }
            ],
        }
    return data


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """Form fields and files of a ``multipart/form-data`` body (``cgi`` is gone in 3.13)."""
    if not content_type.startswith("multipart/"):
        raise HTTPError(400, "Expected a multipart/form-data body.")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[str(name)] = (filename, payload)
        else:
            fields[str(name)] = payload.decode()
    return fields, files


def error_reply(status: int, message: str, retry_after: float | None) -> Reply:
    """An OpenAI-shaped error, with ``Retry-After`` and ``retry-after-ms`` when given."""
    headers: list[tuple[str, str]] = []
    if retry_after is not None:
        headers.append(("Retry-After", format_seconds(retry_after)))
        headers.append(("retry-after-ms", str(int(retry_after * 1000))))
    return Reply(status, jsonlib.dumps(error_body(status, message)).encode(), headers)
