"""AI provider settings from Airflow: ``[workflow_engine] llm_conn_ids``, which connections
each model provider's credentials come from, and what a connection holds
(:func:`provider_settings_from_connection`).

The rules are described in :mod:`airflow_workflow_engine.hooks.llm` (the AI factory and the
connection hook that use them). Airflow is imported inside the functions that need it:
importing this module is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.hooks.settings import (
    CONFIG_SECTION,
    airflow_home,
    conf_get,
    find_connection,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_workflow_engine.ai.settings import ProviderKind, ProviderSettings

__all__ = [
    "CONFIG_OPTION",
    "DEFAULT_LLM_CONN_IDS",
    "LLM_CONN_TYPE",
    "RUN_MAX_COST_OPTION",
    "ConnectionGetter",
    "LLMConnectionError",
    "ResolvedProvider",
    "configured_conn_ids",
    "configured_run_max_cost",
    "default_mock_state_dir",
    "known_model_providers",
    "parse_llm_conn_ids",
    "provider_settings_from_connection",
    "providers_from_airflow",
    "resolve_providers",
]

logger = logging.getLogger(__name__)

LLM_CONN_TYPE = "workflow_engine_llm"
CONFIG_OPTION = "llm_conn_ids"
RUN_MAX_COST_OPTION = "ai_run_max_cost"

#: Provider name -> connection ids looked up, in order (the first that exists wins).
DEFAULT_LLM_CONN_IDS: Mapping[str, tuple[str, ...]] = {
    "openai": ("llm_openai_default", "openai_default"),
    "google": ("llm_google_default",),
}

#: Adapter options a ``workflow_engine_llm`` connection may set as top-level extras.
_ADAPTER_OPTIONS = frozenset(
    {
        "timeout",
        "organization",
        "api_version",
        "max_tokens_param",
        "batch_scan_limit",
        "state_dir",
        "batch_polls_until_done",
    }
)
#: Options taken from the official OpenAI connection's ``openai_client_kwargs``.
_OPENAI_CLIENT_OPTIONS = ("timeout", "organization")
#: Connection types whose password is an API key and host a base URL, and nothing else.
_PLAIN_TYPES = frozenset({"pydanticai", "generic", "http"})
_KINDS = ("openai", "google", "mock")


class LLMConnectionError(WorkflowEngineError):
    """An LLM connection (or ``[workflow_engine] llm_conn_ids``) is set up wrongly."""

    retryable = False


# -- configuration ------------------------------------------------------------------------


def parse_llm_conn_ids(raw: str) -> dict[str, tuple[str, ...]]:
    """``"openai=a|b, google=c"`` -> ``{"openai": ("a", "b"), "google": ("c",)}``."""
    result: dict[str, tuple[str, ...]] = {}
    for part in raw.replace(";", ",").split(","):
        item = part.strip()
        if not item:
            continue
        provider, sep, ids = item.partition("=")
        conn_ids = tuple(i.strip() for i in ids.split("|") if i.strip())
        if not sep or not provider.strip() or not conn_ids:
            raise LLMConnectionError(
                f"[{CONFIG_SECTION}] {CONFIG_OPTION}: {item!r} is not 'provider=conn_id' "
                "(e.g. 'openai=my_openai,google=my_gemini'; several ids: 'openai=a|b')."
            )
        result[provider.strip()] = conn_ids
    return result


def configured_conn_ids() -> dict[str, tuple[str, ...]]:
    """The lookup table: the defaults, with ``[workflow_engine] llm_conn_ids`` laid over."""
    return {**DEFAULT_LLM_CONN_IDS, **parse_llm_conn_ids(conf_get(CONFIG_OPTION))}


def known_model_providers(lookup: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Providers a model key may name under Airflow: the built-in ones (``openai``,
    ``google``, ``mock``) and those of ``lookup`` (default: ``[workflow_engine]
    llm_conn_ids``). Checked at DAG parse time and at ``run.create``."""
    from airflow_workflow_engine.ai.providers import ADAPTERS

    return sorted(set(ADAPTERS) | set(configured_conn_ids() if lookup is None else lookup))


def configured_run_max_cost() -> float | None:
    """``[workflow_engine] ai_run_max_cost``: the AI budget of each workflow run in USD
    (every workflow; empty: none). Stages' ``max_cost`` config caps single stages."""
    raw = conf_get(RUN_MAX_COST_OPTION)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise LLMConnectionError(
            f"[{CONFIG_SECTION}] {RUN_MAX_COST_OPTION} must be a number of US dollars >= 0 "
            f"(e.g. '5' or '0.50'), got {raw!r}."
        )
    return value


def default_mock_state_dir() -> str:
    """Where the ``mock`` provider keeps batches under Airflow (shared by every process)."""
    return str(airflow_home() / "workflow_engine" / "mock_batches")


# -- one connection -> ProviderSettings ----------------------------------------------------


def _base_url(conn: Connection) -> str | None:
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" in host:
        return host
    # A bare host name (a connection made from a URI): https, with port and path if given.
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.strip('/')}" if conn.schema else ""
    return f"https://{host}{port}{path}"


def _our_options(conn: Connection, extras: Mapping[str, Any]) -> dict[str, Any]:
    nested = extras.get("options") or {}
    if not isinstance(nested, Mapping):
        raise LLMConnectionError(
            f"Connection '{conn.conn_id}': the 'options' extra must be a JSON object."
        )
    options = dict(nested)
    unknown = sorted(set(extras) - _ADAPTER_OPTIONS - {"kind", "options"})
    if unknown:
        raise LLMConnectionError(
            f"Connection '{conn.conn_id}' (type '{LLM_CONN_TYPE}') has unknown extras "
            f"{', '.join(unknown)}; known: kind, options, {', '.join(sorted(_ADAPTER_OPTIONS))}."
        )
    options.update({k: v for k, v in extras.items() if k in _ADAPTER_OPTIONS})
    return options


def provider_settings_from_connection(conn: Connection, provider: str) -> ProviderSettings:
    """The :class:`~airflow_workflow_engine.ai.settings.ProviderSettings` a connection holds.

    ``provider`` is the name models are addressed by (``openai`` in ``openai:gpt-5-mini``);
    it is also the API kind when the connection does not name one.
    """
    from pydantic import SecretStr

    from airflow_workflow_engine.ai.settings import ProviderSettings

    extras = conn.extra_dejson
    conn_type = (conn.conn_type or "").replace("-", "_")
    key = SecretStr(conn.password) if conn.password else None
    options: dict[str, Any] = {}
    base_url = _base_url(conn)
    if conn_type == LLM_CONN_TYPE:
        kind = str(extras.get("kind") or provider)
        options = _our_options(conn, extras)
    elif conn_type == "openai":
        kind = "openai"
        client_kwargs = extras.get("openai_client_kwargs") or {}
        if isinstance(client_kwargs, Mapping):
            options = {k: client_kwargs[k] for k in _OPENAI_CLIENT_OPTIONS if k in client_kwargs}
            base_url = base_url or client_kwargs.get("base_url")
            if key is None and client_kwargs.get("api_key"):
                key = SecretStr(str(client_kwargs["api_key"]))
    elif conn_type in _PLAIN_TYPES:
        kind = provider
    else:
        raise LLMConnectionError(
            f"Connection '{conn.conn_id}' has type '{conn.conn_type}', which does not hold "
            f"model-provider credentials: use type '{LLM_CONN_TYPE}' (password = API key, "
            "host = base URL), or an 'openai' connection of the official OpenAI provider."
        )
    if kind not in _KINDS:
        raise LLMConnectionError(
            f"Connection '{conn.conn_id}' serves provider '{provider}', but '{kind}' is not an "
            f"API the engine speaks: set its 'kind' extra to one of {', '.join(_KINDS)}."
        )
    try:
        return ProviderSettings(
            kind=cast("ProviderKind", kind), api_key=key, base_url=base_url, options=options
        )
    except ValueError as exc:
        raise LLMConnectionError(f"Connection '{conn.conn_id}': {exc}") from None


#: Returns the connection ``conn_id``, or ``None`` when it does not exist.
ConnectionGetter = Callable[[str], "Connection | None"]


@dataclass(frozen=True)
class ResolvedProvider:
    """Which connection a provider's credentials came from (for logs and tests)."""

    provider: str
    conn_id: str
    settings: ProviderSettings


def resolve_providers(
    lookup: Mapping[str, Sequence[str]] | None = None,
    get_connection: ConnectionGetter = find_connection,
) -> list[ResolvedProvider]:
    """For each provider of ``lookup`` (default: :func:`configured_conn_ids`), the first of
    its connections that exists."""
    table = configured_conn_ids() if lookup is None else lookup
    found: list[ResolvedProvider] = []
    for provider, conn_ids in table.items():
        for conn_id in conn_ids:
            conn = get_connection(conn_id)
            if conn is None:
                continue
            settings = provider_settings_from_connection(conn, provider)
            found.append(ResolvedProvider(provider, conn_id, settings))
            break
    return found


def providers_from_airflow(
    lookup: Mapping[str, Sequence[str]] | None = None,
    get_connection: ConnectionGetter = find_connection,
) -> dict[str, ProviderSettings]:
    """The ``providers`` mapping for :func:`~airflow_workflow_engine.ai.context.make_ai_factory`,
    filled from Airflow connections; the ``mock`` provider keeps batches in files."""
    from airflow_workflow_engine.ai.settings import ProviderSettings

    providers: dict[str, ProviderSettings] = {
        "mock": ProviderSettings(options={"state_dir": default_mock_state_dir()})
    }
    for item in resolve_providers(lookup, get_connection):
        settings = item.settings
        if (settings.kind or item.provider) == "mock" and "state_dir" not in settings.options:
            options = {**settings.options, "state_dir": default_mock_state_dir()}
            settings = settings.model_copy(update={"options": options})
        providers[item.provider] = settings
        logger.info(
            "AI provider '%s' uses the Airflow connection '%s'", item.provider, item.conn_id
        )
    return providers
