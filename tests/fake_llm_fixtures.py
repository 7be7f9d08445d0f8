"""Pytest fixtures for the fake LLM server (import them from ``conftest.py``).

``fake_llm`` starts one :class:`FakeLLMServer` per test on a free local port; ``fake_llm_env``
also points the provider environment variables at it, so code that reads credentials from the
environment talks to the fake and never to the internet.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_workflow_engine.testing.fake_llm import FakeLLMServer

__all__ = ["fake_llm", "fake_llm_env"]


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server
        # A traceback here is a bug in the fake (or a request it does not understand).
        assert not server.server_errors, server.server_errors[0]


@pytest.fixture
def fake_llm_env(fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> FakeLLMServer:
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.openai_base_url)
    monkeypatch.setenv("GEMINI_API_KEY", "test-gemini-key")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_BASE_URL", fake_llm.gemini_base_url)
    return fake_llm
