"""Model provider adapters behind one protocol (:class:`ProviderAdapter`).

Names are resolved lazily (PEP 562): importing this package imports neither ``openai`` nor
``google.genai`` (nor even the adapter modules), so DAG files stay cheap to parse.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.providers.base import (
        BatchHandle,
        BatchItemResult,
        BatchRequest,
        BatchState,
        BatchStatus,
        ChatMessage,
        EmbeddingResponse,
        Messages,
        ProviderAdapter,
        ProviderResponse,
        StreamChunk,
    )
    from airflow_workflow_engine.ai.providers.google import GoogleAdapter
    from airflow_workflow_engine.ai.providers.mock import MockAdapter
    from airflow_workflow_engine.ai.providers.openai import OpenAIAdapter

__all__ = [
    "BatchHandle",
    "BatchItemResult",
    "BatchRequest",
    "BatchState",
    "BatchStatus",
    "ChatMessage",
    "EmbeddingResponse",
    "GoogleAdapter",
    "Messages",
    "MockAdapter",
    "OpenAIAdapter",
    "ProviderAdapter",
    "ProviderResponse",
    "StreamChunk",
    "create_adapter",
]

_BASE = "airflow_workflow_engine.ai.providers.base"
_EXPORTS = {
    **{
        name: _BASE
        for name in (
            "BatchHandle",
            "BatchItemResult",
            "BatchRequest",
            "BatchState",
            "BatchStatus",
            "ChatMessage",
            "EmbeddingResponse",
            "Messages",
            "ProviderAdapter",
            "ProviderResponse",
            "StreamChunk",
        )
    },
    "GoogleAdapter": "airflow_workflow_engine.ai.providers.google",
    "MockAdapter": "airflow_workflow_engine.ai.providers.mock",
    "OpenAIAdapter": "airflow_workflow_engine.ai.providers.openai",
}

#: Provider names understood by :func:`create_adapter`, to their adapter classes.
ADAPTERS = {"openai": "OpenAIAdapter", "google": "GoogleAdapter", "mock": "MockAdapter"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def create_adapter(provider: str, **options: Any) -> ProviderAdapter:
    """An adapter by provider name (``"openai"``, ``"google"``, ``"mock"``); ``options`` go to
    its constructor (``api_key``, ``base_url``, ...)."""
    class_name = ADAPTERS.get(provider)
    if class_name is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown model provider {provider!r}; known providers: {known}")
    adapter: ProviderAdapter = __getattr__(class_name)(**options)
    return adapter
