"""The fake server's core: the HTTP plumbing (``http.server`` in a daemon thread), the
request log, API-key checks and fault injection, and the test-facing API (scripting,
inspection); requests go to the OpenAI or the Gemini routes."""

from __future__ import annotations

import json as jsonlib
import threading
import traceback
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from airflow_workflow_engine.testing.fake_llm._gemini import GeminiRoutes
from airflow_workflow_engine.testing.fake_llm._gemini import error_reply as gemini_error_reply
from airflow_workflow_engine.testing.fake_llm._openai import OpenAIRoutes
from airflow_workflow_engine.testing.fake_llm._openai import error_reply as openai_error_reply
from airflow_workflow_engine.testing.fake_llm._script import (
    PROVIDERS,
    UNSET,
    BatchOutcome,
    Failure,
    FakeState,
    Provider,
    RecordedRequest,
    ScriptedResponse,
)
from airflow_workflow_engine.testing.fake_llm._wire import (
    DEFAULT_ERROR_MESSAGES,
    HTTPError,
    Reply,
)


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
        self._state = FakeState(
            batch_polls_until_done=batch_polls_until_done, batch_outcome=batch_outcome
        )
        self._openai = OpenAIRoutes(self._state)
        self._gemini = GeminiRoutes(self._state)

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
        json: Any = UNSET,
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
            self._state.scripts[provider or "shared"].extend([entry] * times)

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
        failure = Failure(status, retry_after, message, endpoint, times)
        with self._lock:
            self._state.failures[provider or "shared"].append(failure)

    def fail_batch_items(
        self, *ids: str, provider: Provider | None = None, message: str = ""
    ) -> None:
        """Makes batch requests with these ids (OpenAI ``custom_id``, Gemini metadata ``key``)
        come back as per-item errors in batches created afterwards."""
        with self._lock:
            for name in (provider,) if provider else PROVIDERS:
                failing = self._state.failing_items[name]
                for item_id in ids:
                    failing[item_id] = message or f"request {item_id} failed"

    @property
    def batch_polls_until_done(self) -> int:
        with self._lock:
            return self._state.batch_polls_until_done

    @batch_polls_until_done.setter
    def batch_polls_until_done(self, value: int) -> None:
        with self._lock:
            self._state.batch_polls_until_done = value

    @property
    def batch_outcome(self) -> BatchOutcome:
        with self._lock:
            return self._state.batch_outcome

    @batch_outcome.setter
    def batch_outcome(self, value: BatchOutcome) -> None:
        with self._lock:
            self._state.batch_outcome = value

    def reset(self) -> None:
        """Forgets scripts, failures, the request log, files and batches (keeps the port)."""
        with self._lock:
            self._state.reset()

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._state.requests)

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
            return dict(self._state.batches_created)

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of requests the fake itself failed to handle (a bug in the fake or a test)."""
        with self._lock:
            return list(self._state.server_errors)

    def batch_state(self, batch_id: str) -> str:
        """Neutral state of a batch without counting as a poll (``batches/x`` or ``batch_x``)."""
        with self._lock:
            return self._state.batches[batch_id].state

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Reply:
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
            self._state.requests.append(req)
            try:
                if provider == "unknown":
                    raise HTTPError(404, f"No fake route for {method} {path}")
                self._check_auth(provider, headers, query)
                failure = self._state.take_failure(provider, path)
                if failure is not None:
                    return _error_reply(
                        provider, failure.status, failure.message, failure.retry_after
                    )
                if provider == "openai":
                    return self._openai.handle(req)
                return self._gemini.handle(method, path, query, payload)
            except HTTPError as exc:
                return _error_reply(provider, exc.status, exc.message, None)
            except Exception:
                self._state.server_errors.append(traceback.format_exc())
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
            raise HTTPError(401, "Missing API key.")


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


def _error_reply(
    provider: str, status: int, message: str | None, retry_after: float | None
) -> Reply:
    """The provider's error body (OpenAI's for requests no provider claims)."""
    text = message or DEFAULT_ERROR_MESSAGES.get(status, f"Fake error {status}.")
    if provider == "google":
        return gemini_error_reply(status, text, retry_after)
    return openai_error_reply(status, text, retry_after)
