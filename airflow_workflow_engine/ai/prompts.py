"""What the ledger keeps of prompts and responses: the prompt policy.

* ``store`` (default): the prompt and response text, plus the prompt's SHA-256;
* ``hash``: only the prompt's SHA-256 (identical prompts can still be found and counted);
* ``none``: neither.

Known secrets (the configured API keys) are masked in anything stored, whatever the policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Literal, cast, get_args

from airflow_workflow_engine.ai.errors import redact_secrets
from airflow_workflow_engine.ai.providers.base import ChatMessage

__all__ = ["PromptPolicy", "apply_prompt_policy", "check_prompt_policy", "render_prompt"]

PromptPolicy = Literal["store", "hash", "none"]
_POLICIES: tuple[str, ...] = get_args(PromptPolicy)


def check_prompt_policy(value: str) -> PromptPolicy:
    if value not in _POLICIES:
        raise ValueError(f"prompt_policy must be one of {', '.join(_POLICIES)}; got {value!r}")
    return cast(PromptPolicy, value)


def render_prompt(system: str | None, messages: Sequence[ChatMessage]) -> str:
    """A conversation as one text: ``system: ...`` then ``user: ...`` blocks."""
    parts = [f"system: {system}"] if system else []
    parts += [f"{m.role}: {m.content}" for m in messages]
    return "\n\n".join(parts)


def render_texts(texts: Sequence[str]) -> str:
    """Embedding inputs as one text (a JSON array)."""
    return json.dumps(list(texts), ensure_ascii=False)


def apply_prompt_policy(
    policy: PromptPolicy,
    prompt: str | None,
    response: str | None,
    secrets: Iterable[str] = (),
) -> tuple[str | None, str | None, str | None]:
    """``(prompt, response, prompt_hash)`` as the ledger may keep them under ``policy``."""
    if policy == "none":
        return None, None, None
    digest = hashlib.sha256(prompt.encode()).hexdigest() if prompt is not None else None
    if policy == "hash":
        return None, None, digest
    secret_list = [s for s in secrets if s]

    def mask(text: str | None) -> str | None:
        if text is None or not secret_list:
            return text
        for secret in secret_list:
            text = text.replace(secret, "***")
        return text

    return mask(prompt), mask(response), digest


def mask_error(text: str, secrets: Iterable[str] = ()) -> str:
    """An error message with known secrets and key-shaped strings masked."""
    return redact_secrets(text, secrets)
