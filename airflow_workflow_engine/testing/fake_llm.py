"""A fake OpenAI + Gemini HTTP server for offline tests.

It speaks the parts of the OpenAI REST API and of the Gemini (Generative Language) REST API that
the official ``openai`` and ``google-genai`` SDKs call, so tests drive the *real* SDKs (their
request building, response parsing and error classes) without reaching the internet::

    with FakeLLMServer() as fake:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test")
        fake.script(text="hello")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])

Standard library only (``http.server`` in a daemon thread), bound to 127.0.0.1 on a free port.
Unscripted calls answer deterministically, exactly as the mock provider does (both use the
stdlib-only :mod:`airflow_workflow_engine.ai.deterministic`): ``"echo: <last user message>"``,
schema-shaped JSON for structured output, hash-derived unit vectors for embeddings.

Beyond the happy path: ``fail_next`` injects provider-shaped 429/5xx errors with ``Retry-After``,
``fail_batch_items`` makes single batch requests fail, ``batch_polls_until_done`` and
``batch_outcome`` script a batch's lifecycle, and ``requests`` logs everything received.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import itertools
import json as jsonlib
import struct
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["BatchOutcome", "FakeLLMServer", "Provider", "RecordedRequest", "ScriptedResponse"]

Provider = Literal["openai", "google"]
BatchOutcome = Literal["completed", "failed", "expired"]
PROVIDERS: tuple[Provider, ...] = ("openai", "google")

_UNSET: Any = object()
_OPENAI_EMBEDDING_DIMS = {"text-embedding-3-large": 3072}
_GEMINI_EMBEDDING_DIMS = {"gemini-embedding-001": 3072}
_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
_GEMINI_STATUS = {
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
_OPENAI_ERROR_TYPE = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


# ----------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received (``json`` is ``None`` when the body was not JSON)."""

    provider: str
    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class ScriptedResponse:
    """The next model answer. ``usage`` keys: input_tokens, output_tokens, cached_tokens,
    reasoning_tokens, cost (OpenAI-compatible ``usage.cost``)."""

    text: str | None = None
    json: Any = _UNSET
    usage: Mapping[str, float] | None = None
    finish_reason: str | None = None


# ----------------------------------------------------------------------------- internal state


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    message: str | None
    endpoint: str | None
    remaining: int


@dataclass(frozen=True)
class _Completion:
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: float | None
    finish_reason: str  # neutral: stop | length | content_filter | raw


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int


@dataclass
class _BatchItem:
    key: str
    completion: _Completion | None
    error: str | None
    model: str
    embedding: dict[str, Any] | None = None  # OpenAI /v1/embeddings lines


@dataclass
class _Batch:
    provider: Provider
    id: str
    model: str
    items: list[_BatchItem]
    polls_until_done: int
    outcome: BatchOutcome
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None
    input_file_id: str = ""
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"
    polls: int = 0
    cancel_requested: bool = False
    state: str = "pending"  # pending | running | completed | failed | expired | cancelled
    finished_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------- the server


class FakeLLMServer:
    """A thread-safe fake of the OpenAI and Gemini REST APIs on ``127.0.0.1:<free port>``.

    Args:
        batch_polls_until_done: status polls a new batch answers "running" before it finishes.
        batch_outcome: how unscripted batches finish (``completed``, ``failed`` or ``expired``).
        require_api_key: answer 401 when a request carries no API key, as the real APIs do.
    """

    def __init__(
        self,
        *,
        batch_polls_until_done: int = 1,
        batch_outcome: BatchOutcome = "completed",
        require_api_key: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._lock = threading.RLock()
        self._host = host
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.require_api_key = require_api_key
        self._batch_polls_until_done = batch_polls_until_done
        self._batch_outcome: BatchOutcome = batch_outcome
        self._ids = itertools.count(1)
        self._init_state()

    def _init_state(self) -> None:
        self._scripts: dict[str, deque[ScriptedResponse]] = {
            "openai": deque(),
            "google": deque(),
            "shared": deque(),
        }
        self._failures: dict[str, deque[_Failure]] = {
            "openai": deque(),
            "google": deque(),
            "shared": deque(),
        }
        self._failing_items: dict[str, dict[str, str]] = {"openai": {}, "google": {}}
        self._requests: list[RecordedRequest] = []
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._batches_created: dict[str, int] = {"openai": 0, "google": 0}
        self._server_errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeLLMServer:
        """Binds the socket and serves from a daemon thread; returns ``self``."""
        with self._lock:
            if self._httpd is not None:
                return self
            httpd = _HTTPServer((self._host, self._port), _Handler)
            httpd.fake = self
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-llm-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the server must be started)."""
        httpd = self._httpd
        if httpd is None:
            raise RuntimeError("FakeLLMServer is not running: call start() or use it in a `with`.")
        host, port = httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        """Pass as ``openai.OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def gemini_base_url(self) -> str:
        """Pass as ``genai.Client(http_options={"base_url": ...})`` (the SDK adds the version)."""
        return self.url

    # ------------------------------------------------------------------ scripting

    def script(
        self,
        text: str | None = None,
        *,
        json: Any = _UNSET,
        usage: Mapping[str, float] | None = None,
        finish_reason: str | None = None,
        provider: Provider | None = None,
        times: int = 1,
    ) -> None:
        """Queues the next model answer(s). ``provider=None`` queues for whichever asks first.

        ``json`` is serialised as the answer text (structured output); ``usage`` overrides the
        reported token counts; ``finish_reason`` is neutral (``stop``, ``length``, ...).
        Batches consume scripted answers when they are created, one per request line.
        """
        entry = ScriptedResponse(text=text, json=json, usage=usage, finish_reason=finish_reason)
        with self._lock:
            self._scripts[provider or "shared"].extend([entry] * times)

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        provider: Provider | None = None,
        endpoint: str | None = None,
        message: str | None = None,
    ) -> None:
        """Makes the next ``times`` requests fail with ``status`` and a provider-shaped body.

        ``retry_after`` adds a ``Retry-After`` header (and ``retry-after-ms`` for OpenAI, a
        ``RetryInfo`` detail for Gemini). ``endpoint`` limits the failure to request paths
        containing that text, e.g. ``"chat/completions"`` or ``":generateContent"``.
        """
        failure = _Failure(status, retry_after, message, endpoint, times)
        with self._lock:
            self._failures[provider or "shared"].append(failure)

    def fail_batch_items(
        self, *ids: str, provider: Provider | None = None, message: str = ""
    ) -> None:
        """Makes batch requests with these ids (OpenAI ``custom_id``, Gemini metadata ``key``)
        come back as per-item errors in batches created afterwards."""
        with self._lock:
            for name in (provider,) if provider else PROVIDERS:
                for item_id in ids:
                    self._failing_items[name][item_id] = message or f"request {item_id} failed"

    @property
    def batch_polls_until_done(self) -> int:
        with self._lock:
            return self._batch_polls_until_done

    @batch_polls_until_done.setter
    def batch_polls_until_done(self, value: int) -> None:
        with self._lock:
            self._batch_polls_until_done = value

    @property
    def batch_outcome(self) -> BatchOutcome:
        with self._lock:
            return self._batch_outcome

    @batch_outcome.setter
    def batch_outcome(self, value: BatchOutcome) -> None:
        with self._lock:
            self._batch_outcome = value

    def reset(self) -> None:
        """Forgets scripts, failures, the request log, files and batches (keeps the port)."""
        with self._lock:
            self._init_state()

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(
        self, path_contains: str, *, method: str | None = None
    ) -> list[RecordedRequest]:
        """Logged requests whose path contains ``path_contains`` (and with ``method``)."""
        return [
            r
            for r in self.requests
            if path_contains in r.path and (method is None or r.method == method.upper())
        ]

    @property
    def batches_created(self) -> dict[str, int]:
        """``{"openai": n, "google": n}``: batches created so far per provider."""
        with self._lock:
            return dict(self._batches_created)

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of requests the fake itself failed to handle (a bug in the fake or a test)."""
        with self._lock:
            return list(self._server_errors)

    def batch_state(self, batch_id: str) -> str:
        """Neutral state of a batch without counting as a poll (``batches/x`` or ``batch_x``)."""
        with self._lock:
            return self._batches[batch_id].state

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Reply:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query))
        provider = _provider_of(path, headers, query)
        try:
            payload: Any = jsonlib.loads(body) if body else None
        except ValueError:
            payload = None
        with self._lock:
            req = RecordedRequest(provider, method, path, query, payload, dict(headers), body)
            self._requests.append(req)
            try:
                if provider == "unknown":
                    raise _HTTPError(404, f"No fake route for {method} {path}")
                self._check_auth(provider, headers, query)
                failure = self._take_failure(provider, path)
                if failure is not None:
                    return _error_reply(
                        provider, failure.status, failure.message, failure.retry_after
                    )
                if provider == "openai":
                    return self._openai(req)
                return self._gemini(method, path, query, payload)
            except _HTTPError as exc:
                return _error_reply(provider, exc.status, exc.message, None)
            except Exception:
                self._server_errors.append(traceback.format_exc())
                return _error_reply(provider, 500, "fake server error (see server_errors)", None)

    def _check_auth(
        self, provider: str, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> None:
        if not self.require_api_key:
            return
        if provider == "openai":
            token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        else:
            token = headers.get("x-goog-api-key") or query.get("key", "")
        if not token:
            raise _HTTPError(401, "Missing API key.")

    def _take_failure(self, provider: str, path: str) -> _Failure | None:
        for queue_name in (provider, "shared"):
            queue = self._failures[queue_name]
            for failure in queue:
                if failure.endpoint is None or failure.endpoint in path:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        queue.remove(failure)
                    return failure
        return None

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _complete(
        self,
        provider: Provider,
        prompt: str,
        all_text: str,
        *,
        want_json: bool,
        schema: Mapping[str, Any] | None,
        max_tokens: int | None,
    ) -> _Completion:
        """One model answer: the next scripted one, else a deterministic default."""
        scripted = self._scripts[provider].popleft() if self._scripts[provider] else None
        if scripted is None and self._scripts["shared"]:
            scripted = self._scripts["shared"].popleft()
        scripted = scripted or ScriptedResponse()
        from airflow_workflow_engine.ai import deterministic

        if scripted.json is not _UNSET:
            text = jsonlib.dumps(scripted.json)
        elif scripted.text is not None:
            text = scripted.text
        elif want_json:
            value = deterministic.example_from_schema(schema, seed=prompt) if schema else None
            text = jsonlib.dumps(value if schema else {"text": deterministic.echo_text(prompt)})
        else:
            text = deterministic.echo_text(prompt)
        finish = scripted.finish_reason or "stop"
        words = text.split(" ")
        if scripted.finish_reason is None and max_tokens is not None and len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
        usage = dict(scripted.usage or {})
        cost = usage.get("cost")
        return _Completion(
            text=text,
            input_tokens=int(
                usage.get("input_tokens", max(deterministic.count_tokens(all_text), 1))
            ),
            output_tokens=int(usage.get("output_tokens", deterministic.count_tokens(text))),
            cached_tokens=int(usage.get("cached_tokens", 0)),
            reasoning_tokens=int(usage.get("reasoning_tokens", 0)),
            cost=None if cost is None else float(cost),
            finish_reason=finish,
        )

    def _advance(self, batch: _Batch) -> None:
        """A status poll: counts it and moves the batch along its scripted lifecycle."""
        if batch.state in ("completed", "failed", "expired", "cancelled"):
            return
        batch.polls += 1
        if batch.cancel_requested:
            batch.state = "cancelled"
        elif batch.polls > batch.polls_until_done:
            batch.state = batch.outcome
        else:
            batch.state = "running"
            return
        batch.finished_at = int(time.time())
        if batch.provider == "openai":
            self._openai_finish_batch(batch)

    # ================================================================== OpenAI

    def _openai(self, req: RecordedRequest) -> _Reply:
        segs = req.path.strip("/").split("/")[1:]  # drop "v1"
        route = (req.method, *segs)
        if route == ("POST", "chat", "completions"):
            return self._openai_chat(_require_obj(req.json))
        if route == ("POST", "embeddings"):
            return _json_reply(self._openai_embeddings(_require_obj(req.json)))
        if route == ("GET", "models"):
            models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
            return _json_reply({"object": "list", "data": [_openai_model(m) for m in models]})
        if segs[:1] == ["files"]:
            return self._openai_files(req, segs)
        if segs[:1] == ["batches"]:
            return self._openai_batches(req, segs)
        raise _HTTPError(404, f"Invalid URL ({req.method} {req.path})")

    def _openai_files(self, req: RecordedRequest, segs: list[str]) -> _Reply:
        if req.method == "POST" and len(segs) == 1:
            return self._openai_upload(req.headers.get("content-type", ""), req.body)
        if req.method == "GET" and len(segs) in (2, 3):
            file = self._files.get(segs[1])
            if file is None:
                raise _HTTPError(404, f"No such File object: {segs[1]}")
            if segs[2:] == ["content"]:
                return _Reply(200, file.content, content_type="application/octet-stream")
            if len(segs) == 2:
                return _json_reply(_openai_file(file))
        raise _HTTPError(404, f"Invalid URL ({req.method} {req.path})")

    def _openai_batches(self, req: RecordedRequest, segs: list[str]) -> _Reply:
        if len(segs) == 1:
            if req.method == "POST":
                return _json_reply(self._openai_create_batch(_require_obj(req.json)))
            return _json_reply(self._openai_list_batches(req.query))
        batch = self._batches.get(segs[1])
        if batch is None or batch.provider != "openai":
            raise _HTTPError(404, f"No batch found with id '{segs[1]}'.")
        if req.method == "GET" and len(segs) == 2:
            self._advance(batch)
            return _json_reply(_openai_batch(batch))
        if req.method == "POST" and segs[2:] == ["cancel"]:
            if batch.state not in ("completed", "failed", "expired", "cancelled"):
                batch.cancel_requested = True
            return _json_reply(_openai_batch(batch, cancelling=batch.cancel_requested))
        raise _HTTPError(404, f"Invalid URL ({req.method} {req.path})")

    def _openai_chat_completion(self, body: Mapping[str, Any]) -> tuple[str, _Completion]:
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            raise _HTTPError(400, "'messages' must be a non-empty array.")
        texts = [(str(m.get("role")), _openai_content_text(m.get("content"))) for m in messages]
        prompt = next((t for role, t in reversed(texts) if role == "user"), texts[-1][1])
        fmt = body.get("response_format") or {}
        schema = None
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
        completion = self._complete(
            "openai",
            prompt,
            "\n".join(t for _, t in texts),
            want_json=fmt.get("type") in ("json_schema", "json_object"),
            schema=schema,
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        )
        return str(body.get("model") or "gpt-fake"), completion

    def _openai_chat(self, body: Mapping[str, Any]) -> _Reply:
        model, completion = self._openai_chat_completion(body)
        response_id = self._next_id("chatcmpl-fake")
        if not body.get("stream"):
            return _json_reply(_openai_chat_json(response_id, model, completion))
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
        events += [chunk({"content": piece}, None) for piece in _pieces(completion.text)]
        events.append(chunk({}, completion.finish_reason))
        if include_usage:
            events.append(
                {
                    "id": response_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _openai_usage(completion),
                }
            )
        sse = b"".join(b"data: " + jsonlib.dumps(e).encode() + b"\n\n" for e in events)
        return _Reply(200, sse + b"data: [DONE]\n\n", content_type="text/event-stream")

    def _openai_embeddings(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from airflow_workflow_engine.ai import deterministic

        model = str(body.get("model") or "text-embedding-3-small")
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        if not inputs:
            raise _HTTPError(400, "'input' must not be empty.")
        texts = [x if isinstance(x, str) else jsonlib.dumps(x) for x in inputs]
        dims = int(body.get("dimensions") or _OPENAI_EMBEDDING_DIMS.get(model, 1536))
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

    def _openai_upload(self, content_type: str, body: bytes) -> _Reply:
        fields, files = _parse_multipart(content_type, body)
        if "file" not in files:
            raise _HTTPError(400, "Missing 'file' in multipart body.")
        filename, content = files["file"]
        file = _File(
            id=self._next_id("file-fake"),
            filename=filename,
            purpose=fields.get("purpose", "batch"),
            content=content,
            created_at=int(time.time()),
        )
        self._files[file.id] = file
        return _json_reply(_openai_file(file))

    def _openai_create_batch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        file = self._files.get(str(body.get("input_file_id")))
        if file is None:
            raise _HTTPError(400, f"Input file '{body.get('input_file_id')}' does not exist.")
        endpoint = str(body.get("endpoint") or "/v1/chat/completions")
        metadata = body.get("metadata") or {}
        if len(metadata) > 16 or any(len(str(v)) > 512 for v in metadata.values()):
            raise _HTTPError(400, "metadata: at most 16 pairs, values up to 512 characters.")
        items: list[_BatchItem] = []
        models: set[str] = set()
        for number, line in enumerate(file.content.decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = jsonlib.loads(line)
            except ValueError as exc:
                raise _HTTPError(400, f"Line {number} of the input file is not JSON.") from exc
            if entry.get("url") != endpoint or "custom_id" not in entry:
                raise _HTTPError(400, f"Line {number}: needs custom_id and url '{endpoint}'.")
            items.append(self._openai_batch_item(entry, endpoint))
            models.add(items[-1].model)
        if not items:
            raise _HTTPError(400, "The input file is empty.")
        batch = _Batch(
            provider="openai",
            id=self._next_id("batch_fake"),
            model=sorted(models)[0],
            items=items,
            polls_until_done=self._batch_polls_until_done,
            outcome=self._batch_outcome,
            created_at=int(time.time()),
            metadata={str(k): str(v) for k, v in metadata.items()},
            input_file_id=file.id,
            endpoint=endpoint,
            completion_window=str(body.get("completion_window") or "24h"),
        )
        self._batches[batch.id] = batch
        self._batches_created["openai"] += 1
        return _openai_batch(batch)

    def _openai_batch_item(self, entry: Mapping[str, Any], endpoint: str) -> _BatchItem:
        key = str(entry["custom_id"])
        request = _require_obj(entry.get("body"))
        model = str(request.get("model") or "gpt-fake")
        error = self._failing_items["openai"].get(key)
        if error is not None:
            return _BatchItem(key, None, error, model)
        if endpoint == "/v1/embeddings":
            return _BatchItem(key, None, None, model, embedding=self._openai_embeddings(request))
        _, completion = self._openai_chat_completion(request)
        return _BatchItem(key, completion, None, model)

    def _openai_finish_batch(self, batch: _Batch) -> None:
        if batch.state != "completed":
            return
        ok_lines, error_lines = [], []
        for item in batch.items:
            line: dict[str, Any] = {
                "id": self._next_id("batch_req_fake"),
                "custom_id": item.key,
                "error": None,
            }
            request_id = self._next_id("req_fake")
            if item.error is not None:
                body = {"error": _openai_error_body(400, item.error)["error"]}
                line["response"] = {"status_code": 400, "request_id": request_id, "body": body}
                error_lines.append(line)
                continue
            body = item.embedding or _openai_chat_json(
                self._next_id("chatcmpl-fake"), item.model, _must(item.completion)
            )
            line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
            ok_lines.append(line)
        for lines, attr in ((ok_lines, "output_file_id"), (error_lines, "error_file_id")):
            if lines:
                file = _File(
                    id=self._next_id("file-fake"),
                    filename=f"{batch.id}_{attr.split('_')[0]}.jsonl",
                    purpose="batch_output",
                    content="".join(jsonlib.dumps(x) + "\n" for x in lines).encode(),
                    created_at=int(time.time()),
                )
                self._files[file.id] = file
                setattr(batch, attr, file.id)

    def _openai_list_batches(self, query: Mapping[str, str]) -> dict[str, Any]:
        batches = [b for b in self._batches.values() if b.provider == "openai"]
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
            "data": [_openai_batch(b) for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(batches) > limit,
        }

    # ================================================================== Gemini

    def _gemini(self, method: str, path: str, query: Mapping[str, str], payload: Any) -> _Reply:
        rest = path.strip("/").split("/", 1)[1] if "/" in path.strip("/") else ""
        if method == "GET" and rest == "models":
            names = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"]
            return _json_reply({"models": [{"name": f"models/{n}"} for n in names]})
        if rest.startswith("models/") and ":" in rest and method == "POST":
            model, action = rest.removeprefix("models/").rsplit(":", 1)
            body = _require_obj(payload)
            if action == "generateContent":
                return _json_reply(self._gemini_generate(model, body))
            if action == "streamGenerateContent":
                return self._gemini_stream(model, body)
            if action == "embedContent":
                return _json_reply(self._gemini_embed(model, [body], single=True))
            if action == "batchEmbedContents":
                return _json_reply(
                    self._gemini_embed(model, body.get("requests") or [], single=False)
                )
            if action == "batchGenerateContent":
                return _json_reply(self._gemini_create_batch(model, body))
        if rest == "batches" and method == "GET":
            return _json_reply(self._gemini_list_batches(query))
        if rest.startswith("batches/"):
            name, _, action = rest.partition(":")
            batch = self._batches.get(name)
            if batch is None or batch.provider != "google":
                raise _HTTPError(404, f"Batch '{name}' not found.")
            if method == "GET" and not action:
                self._advance(batch)
                return _json_reply(self._gemini_batch_json(batch))
            if method == "POST" and action == "cancel":
                if batch.state not in ("completed", "failed", "expired", "cancelled"):
                    batch.cancel_requested = True
                return _json_reply({})
        raise _HTTPError(404, f"Method not found: {method} {path}")

    def _gemini_completion(self, body: Mapping[str, Any]) -> _Completion:
        contents = body.get("contents") or []
        if not contents:
            raise _HTTPError(400, "* GenerateContentRequest.contents: contents is not specified")
        texts = [(str(c.get("role") or "user"), _gemini_parts_text(c)) for c in contents]
        system = body.get("systemInstruction") or body.get("system_instruction")
        system_text = _gemini_parts_text(system) if isinstance(system, Mapping) else ""
        prompt = next((t for role, t in reversed(texts) if role == "user"), texts[-1][1])
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        return self._complete(
            "google",
            prompt,
            "\n".join([system_text, *(t for _, t in texts)]),
            want_json=config.get("responseMimeType") == "application/json",
            schema=schema,
            max_tokens=config.get("maxOutputTokens"),
        )

    def _gemini_response(
        self,
        model: str,
        completion: _Completion,
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
            candidate["finishReason"] = _GEMINI_FINISH.get(reason, reason.upper())
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
            "responseId": self._next_id("fake-response-"),
        }

    def _gemini_generate(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._gemini_response(model, self._gemini_completion(body))

    def _gemini_stream(self, model: str, body: Mapping[str, Any]) -> _Reply:
        completion = self._gemini_completion(body)
        pieces = _pieces(completion.text) or [""]
        events, produced = [], 0
        for index, piece in enumerate(pieces):
            final = index == len(pieces) - 1
            produced = (
                completion.output_tokens
                if final
                else min(produced + len(piece.split()), completion.output_tokens)
            )
            events.append(
                self._gemini_response(model, completion, piece, final=final, output_tokens=produced)
            )
        sse = b"".join(b"data: " + jsonlib.dumps(e).encode() + b"\r\n\r\n" for e in events)
        return _Reply(200, sse, content_type="text/event-stream")

    def _gemini_embed(self, model: str, requests: Iterable[Any], *, single: bool) -> dict[str, Any]:
        from airflow_workflow_engine.ai import deterministic

        vectors, tokens = [], 0
        default_dims = _GEMINI_EMBEDDING_DIMS.get(model, 768)
        for request in requests:
            text = _gemini_parts_text(request.get("content") or {})
            dims = int(request.get("outputDimensionality") or default_dims)
            vectors.append({"values": deterministic.hash_embedding(text, dims)})
            tokens += max(deterministic.count_tokens(text), 1)
        if not vectors:
            raise _HTTPError(400, "* BatchEmbedContentsRequest.requests: must not be empty")
        usage = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        if single:
            return {"embedding": vectors[0], "usageMetadata": usage}
        return {"embeddings": vectors, "usageMetadata": usage}

    def _gemini_create_batch(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        spec = _require_obj(body.get("batch"))
        input_config = spec.get("inputConfig") or {}
        requests = (input_config.get("requests") or {}).get("requests") or []
        if not requests:
            raise _HTTPError(400, "* batch.input_config: inlined requests are required")
        items = []
        for index, entry in enumerate(requests):
            key = str((entry.get("metadata") or {}).get("key", index))
            error = self._failing_items["google"].get(key)
            completion = None
            if error is None:
                completion = self._gemini_completion(_require_obj(entry.get("request")))
            items.append(_BatchItem(key, completion, error, model))
        batch = _Batch(
            provider="google",
            id=self._next_id("batches/fakebatch"),
            model=f"models/{model}",
            items=items,
            polls_until_done=self._batch_polls_until_done,
            outcome=self._batch_outcome,
            created_at=int(time.time()),
            display_name=spec.get("displayName"),
        )
        self._batches[batch.id] = batch
        self._batches_created["google"] += 1
        return self._gemini_batch_json(batch)

    def _gemini_batch_json(self, batch: _Batch) -> dict[str, Any]:
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
            "createTime": _iso(batch.created_at),
            "updateTime": _iso(batch.finished_at or batch.created_at),
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
            meta["endTime"] = _iso(batch.finished_at)
        if batch.state == "completed":
            responses = []
            for item in batch.items:
                entry: dict[str, Any] = {"metadata": {"key": item.key}}
                if item.error is not None:
                    entry["error"] = {"code": 3, "message": item.error}
                else:
                    entry["response"] = self._gemini_response(item.model, _must(item.completion))
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

    def _gemini_list_batches(self, query: Mapping[str, str]) -> dict[str, Any]:
        batches = [b for b in self._batches.values() if b.provider == "google"]
        batches.reverse()
        start = int(query.get("pageToken") or 0)
        size = int(query.get("pageSize") or 50)
        page = batches[start : start + size]
        result: dict[str, Any] = {"operations": [self._gemini_batch_json(b) for b in page]}
        if start + size < len(batches):
            result["nextPageToken"] = str(start + size)
        return result


# ----------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeLLMServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake._dispatch(method, self.path, headers, body)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is :attr:`FakeLLMServer.requests`."""


# ----------------------------------------------------------------------------- helpers


def _provider_of(path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """Which API a request is for. google-genai uses ``/v1`` or ``/v1beta`` depending on its
    version, so its ``x-goog-*`` headers (or ``?key=``) decide when the prefix does not."""
    if path.startswith(("/v1beta/", "/v1alpha/")):
        return "google"
    if not path.startswith("/v1/"):
        return "unknown"
    if "key" in query or any(name.startswith("x-goog-") for name in headers):
        return "google"
    if path.startswith("/v1/models/") and ":" in path.rsplit("/", 1)[-1]:
        return "google"
    return "openai"


def _json_reply(data: Any, status: int = 200) -> _Reply:
    return _Reply(status, jsonlib.dumps(data).encode())


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _openai_error_body(status: int, message: str) -> dict[str, Any]:
    kind, code = _OPENAI_ERROR_TYPE.get(
        status, ("server_error" if status >= 500 else "error", None)
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _error_reply(
    provider: str, status: int, message: str | None, retry_after: float | None
) -> _Reply:
    default = {
        429: "Rate limit reached (fake).",
        500: "The server had an error while processing your request (fake).",
        503: "The service is overloaded (fake).",
    }
    text = message or default.get(status, f"Fake error {status}.")
    headers: list[tuple[str, str]] = []
    if retry_after is not None:
        headers.append(("Retry-After", _format_seconds(retry_after)))
    if provider == "google":
        error: dict[str, Any] = {
            "code": status,
            "message": text,
            "status": _GEMINI_STATUS.get(status, "UNKNOWN"),
        }
        if retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{_format_seconds(retry_after)}s",
                }
            ]
        return _Reply(status, jsonlib.dumps({"error": error}).encode(), headers)
    if retry_after is not None:
        headers.append(("retry-after-ms", str(int(retry_after * 1000))))
    return _Reply(status, jsonlib.dumps(_openai_error_body(status, text)).encode(), headers)


def _require_obj(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _HTTPError(400, "The request body must be a JSON object.")
    return value


def _must(value: _Completion | None) -> _Completion:
    assert value is not None
    return value


def _pieces(text: str, size: int = 3) -> list[str]:
    """Splits text into stream deltas of a few words each (concatenating them restores it)."""
    words = text.split(" ")
    groups = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [g + (" " if i < len(groups) - 1 else "") for i, g in enumerate(groups)] if text else []


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _openai_content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _gemini_parts_text(content: Any) -> str:
    if not isinstance(content, Mapping):
        return ""
    parts = content.get("parts") or []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping))


def _openai_usage(c: _Completion) -> dict[str, Any]:
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


def _openai_chat_json(response_id: str, model: str, c: _Completion) -> dict[str, Any]:
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
        "usage": _openai_usage(c),
    }


def _openai_model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake"}


def _openai_file(file: _File) -> dict[str, Any]:
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


def _openai_batch(batch: _Batch, *, cancelling: bool = False) -> dict[str, Any]:
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
        raise _HTTPError(400, "Expected a multipart/form-data body.")
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
