"""Which providers the AI helper may call, and with which credentials.

``providers`` maps a provider name (the prefix of a model key) to a :class:`ProviderSettings`,
a plain dict of the same fields, or a ready adapter. ``openai``, ``google`` and ``mock`` are
always known; unless configured, the first two read their credentials from the environment
(``OPENAI_API_KEY``/``OPENAI_BASE_URL``, ``GEMINI_API_KEY``/``GEMINI_BASE_URL``) when first
used. Other names need ``kind``, e.g. an OpenAI-compatible gateway::

    providers = {
        "openrouter": ProviderSettings(kind="openai", base_url="https://openrouter.ai/api/v1",
                                       api_key="..."),
    }
    ctx.ai.generate_text("openrouter:meta-llama/llama-3.1-8b-instruct", "hi")

Under Airflow the provider's hooks fill the same mapping from Airflow connections. Adapters are
built on first use (so their SDKs are imported only then) and shared by every helper made from
one registry. API keys are kept as :class:`~pydantic.SecretStr` and never printed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from airflow_workflow_engine.ai.models import ModelKey, UnknownModelError
from airflow_workflow_engine.ai.providers import ADAPTERS, ProviderAdapter, create_adapter

__all__ = ["ProviderKind", "ProviderRegistry", "ProviderSettings", "ProvidersLike"]

ProviderKind = Literal["openai", "google", "mock"]
#: Environment variables the adapters read keys from (masked like configured keys).
_KEY_VARIABLES = ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


class ProviderSettings(BaseModel):
    """How to reach one provider. ``kind`` defaults to the provider's name; ``options`` go to
    the adapter (``timeout``, ``organization``, ``api_version``, ``batch_polls_until_done``...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ProviderKind | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


ProvidersLike: TypeAlias = Mapping[str, "ProviderSettings | ProviderAdapter | Mapping[str, Any]"]


class ProviderRegistry:
    """Provider name -> adapter, built lazily from settings and cached (thread-safe)."""

    def __init__(self, providers: ProvidersLike | None = None) -> None:
        self._settings: dict[str, ProviderSettings] = {
            name: ProviderSettings() for name in ADAPTERS
        }
        self._adapters: dict[str, ProviderAdapter] = {}
        self._lock = threading.Lock()
        for name, value in (providers or {}).items():
            if isinstance(value, ProviderAdapter):
                self._adapters[name] = value
                self._settings.setdefault(name, ProviderSettings())
                continue
            settings = (
                value if isinstance(value, ProviderSettings) else ProviderSettings(**dict(value))
            )
            kind = settings.kind or name
            if kind not in ADAPTERS:
                raise ValueError(
                    f"provider {name!r} needs kind= one of {', '.join(sorted(ADAPTERS))} "
                    "(the API it speaks)"
                )
            self._settings[name] = settings

    def __repr__(self) -> str:
        return f"ProviderRegistry({', '.join(self.names)})"

    @property
    def names(self) -> list[str]:
        return sorted(self._settings)

    def parse(self, model: str) -> ModelKey:
        """A model key, checked against the known providers."""
        return ModelKey.parse(model, self._settings)

    def adapter(self, provider: str) -> ProviderAdapter:
        """The adapter of ``provider`` (created on first use; may raise ProviderConfigError)."""
        with self._lock:
            adapter = self._adapters.get(provider)
            if adapter is not None:
                return adapter
            settings = self._settings.get(provider)
            if settings is None:
                raise UnknownModelError(
                    f"Unknown model provider {provider!r}; known providers: "
                    f"{', '.join(self.names)}."
                )
            kind = settings.kind or provider
            options: dict[str, Any] = dict(settings.options)
            if kind != "mock":
                if settings.api_key is not None:
                    options["api_key"] = settings.api_key.get_secret_value()
                if settings.base_url is not None:
                    options["base_url"] = settings.base_url
            options["provider_name"] = provider
            adapter = create_adapter(kind, **options)
            # Create the SDK client now (importing the SDK takes a second or two), so that
            # the first call's latency in the ledger is the provider's, not the import's.
            getattr(adapter, "client", None)
            self._adapters[provider] = adapter
            return adapter

    def secrets(self) -> list[str]:
        """Configured API keys (to mask them in anything stored or logged)."""
        keys = [s.api_key.get_secret_value() for s in self._settings.values() if s.api_key]
        keys += [os.environ.get(name, "") for name in _KEY_VARIABLES]
        return [k for k in dict.fromkeys(keys) if len(k) >= 4]
