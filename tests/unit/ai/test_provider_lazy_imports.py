"""Importing the providers (even constructing adapters) must not import the SDKs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from airflow_workflow_engine.ai import providers


def test_provider_package_does_not_import_sdks() -> None:
    code = textwrap.dedent(
        """
        import sys
        import airflow_workflow_engine.ai.providers as providers
        from airflow_workflow_engine.ai.providers import (
            GoogleAdapter, MockAdapter, OpenAIAdapter, ProviderAdapter,
        )
        from airflow_workflow_engine.ai import retry  # noqa: F401
        OpenAIAdapter(api_key="k")
        GoogleAdapter(api_key="k")
        MockAdapter().generate("echo", "hi")
        providers.create_adapter("mock")
        heavy = sorted(
            m for m in sys.modules
            if m == "openai" or m.startswith(("openai.", "google.genai", "httpx"))
        )
        assert not heavy, heavy
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_unknown_attribute_and_provider() -> None:
    with pytest.raises(AttributeError):
        _ = providers.NoSuchAdapter
    with pytest.raises(ValueError, match="known providers: google, mock, openai"):
        providers.create_adapter("anthropic")
