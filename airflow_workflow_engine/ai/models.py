"""Model keys: ``"<provider>:<model id>"``, e.g. ``openai:gpt-5-mini``, ``mock:echo``.

The provider prefix is mandatory and must name a configured provider: a key without one, or
with an unknown one, is an error. The engine never guesses a provider, and never falls back
to another one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from airflow_workflow_engine.errors import WorkflowEngineError

__all__ = ["ModelKey", "UnknownModelError"]


class UnknownModelError(WorkflowEngineError, ValueError):
    """A model key without a provider prefix, or naming a provider nobody configured."""

    retryable = False


@dataclass(frozen=True)
class ModelKey:
    """A parsed model key. ``model_id`` may itself contain colons (``ft:gpt-4o-mini:org::id``)."""

    provider: str
    model_id: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model_id}"

    @classmethod
    def parse(cls, key: str, known_providers: Iterable[str] | None = None) -> ModelKey:
        """Splits ``key`` at its first colon; checks the provider when ``known_providers``
        is given."""
        if not isinstance(key, str):
            raise UnknownModelError(f"A model key must be a string, got {key!r}.")
        provider, sep, model_id = key.strip().partition(":")
        if not sep or not provider or not model_id:
            raise UnknownModelError(
                f"Model key {key!r} must look like '<provider>:<model>', e.g. "
                "'openai:gpt-5-mini', 'google:gemini-2.5-flash' or 'mock:echo' (the engine "
                "never guesses the provider)."
            )
        if known_providers is not None:
            known = sorted(set(known_providers))
            if provider not in known:
                raise UnknownModelError(
                    f"Unknown model provider {provider!r} in model key {key!r}; known providers: "
                    f"{', '.join(known)}. Configure another one with providers="
                    f"{{{provider!r}: ProviderSettings(kind='openai', base_url=...)}}."
                )
        return cls(provider, model_id)
