"""Model provider adapters behind one protocol (:class:`ProviderAdapter`).

Names are resolved lazily (PEP 562): importing this package imports neither ``openai`` nor
``google.genai`` (nor even the adapter modules), so DAG files stay cheap to parse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_workflow_engine._lazy import lazy_exports

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


def create_adapter(provider: str, **options: Any) -> ProviderAdapter:
    """An adapter by provider name (``"openai"``, ``"google"``, ``"mock"``); ``options`` go to
    its constructor (``api_key``, ``base_url``, ...)."""
    class_name = ADAPTERS.get(provider)
    if class_name is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown model provider {provider!r}; known providers: {known}")
    adapter: ProviderAdapter = __getattr__(class_name)(**options)
    return adapter


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, public=__all__)
