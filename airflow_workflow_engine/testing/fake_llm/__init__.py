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

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.testing.fake_llm._script import (
        BatchOutcome,
        Provider,
        RecordedRequest,
        ScriptedResponse,
    )
    from airflow_workflow_engine.testing.fake_llm._server import FakeLLMServer

__all__ = ["BatchOutcome", "FakeLLMServer", "Provider", "RecordedRequest", "ScriptedResponse"]

_EXPORTS = {
    "BatchOutcome": "_script",
    "Provider": "_script",
    "RecordedRequest": "_script",
    "ScriptedResponse": "_script",
    "FakeLLMServer": "_server",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, relative=True, public=__all__)
