"""AI credentials from Airflow connections: what ``ctx.ai`` uses under Airflow.

Under Airflow the AI helper (``ctx.ai``) takes API keys and base URLs from Airflow
connections, never from a DAG file. For each model provider (the prefix of a model key,
``openai:gpt-5-mini``), the first of its connections that exists is used:

=========== =================================================================================
provider    connections, in order
=========== =================================================================================
``openai``  ``llm_openai_default`` (type ``workflow_engine_llm``), then ``openai_default``
            (type ``openai``, from the official ``apache-airflow-providers-openai``)
``google``  ``llm_google_default`` (type ``workflow_engine_llm``)
=========== =================================================================================

``[workflow_engine] llm_conn_ids`` replaces that list per provider, and adds providers (an
OpenAI-compatible gateway, say): ``openai=my_openai,google=my_gemini,openrouter=llm_openrouter``
(several ids for one provider: ``openai=a|b``, the first that exists wins).

What a connection holds, by type:

- ``workflow_engine_llm`` (this provider's): password = API key, host = base URL (optional);
  extras: ``kind`` (the API it speaks: ``openai``, ``google`` or ``mock``; default: the
  provider's name) and adapter options (``timeout``, ``organization``, ``api_version``,
  ``max_tokens_param``, ``batch_scan_limit``, or any of them under ``options``);
- ``openai`` (the official OpenAI provider): password = API key, host = base URL;
  ``timeout``, ``organization`` and ``base_url`` are read from its ``openai_client_kwargs``;
- ``pydanticai`` (``apache-airflow-providers-common-ai``), ``generic``, ``http``:
  password = API key, host = base URL.

A provider without a connection keeps the AI helper's default: its SDK's environment
variables (``OPENAI_API_KEY``, ``GEMINI_API_KEY``...). The ``mock`` provider needs no key;
under Airflow its batches are kept in ``$AIRFLOW_HOME/workflow_engine/mock_batches`` so that
a batch a worker submitted can be polled from the triggerer.

A provider's connections are looked up when one of its models is first used in a process (a
stage that calls only ``mock`` models looks up nothing) and again after five minutes in
long-lived processes (the triggerer). Ledger
rows are labelled with the DAG id, DAG run id and task id of the running task (from Airflow's
task context; in the triggerer, the DAG run the workflow run belongs to), the
workflow run id and the attempt (the task's try number). ``[workflow_engine] ai_run_max_cost``
(USD) caps the AI spend of every workflow run, across its tasks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseHook

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.hooks.telemetry import install_call_telemetry

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_workflow_engine.ai.context import AIFactory
    from airflow_workflow_engine.ai.helper import AIHelper
    from airflow_workflow_engine.ai.ledger import Ledger
    from airflow_workflow_engine.ai.settings import ProviderKind, ProviderRegistry, ProviderSettings
    from airflow_workflow_engine.definitions.context import StageContext
    from airflow_workflow_engine.kernel.ports import Persistence

__all__ = [
    "DEFAULT_LLM_CONN_IDS",
    "LLM_CONN_TYPE",
    "AirflowAIFactory",
    "LLMConnectionError",
    "ResolvedProvider",
    "WorkflowEngineLLMHook",
    "known_model_providers",
    "parse_llm_conn_ids",
    "provider_settings_from_connection",
    "providers_from_airflow",
    "resolve_providers",
]

logger = logging.getLogger(__name__)

LLM_CONN_TYPE = "workflow_engine_llm"
CONFIG_SECTION = "workflow_engine"
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
    from airflow.sdk import conf

    raw = conf.get(CONFIG_SECTION, CONFIG_OPTION, fallback="") or ""
    return {**DEFAULT_LLM_CONN_IDS, **parse_llm_conn_ids(str(raw))}


def known_model_providers(lookup: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Providers a model key may name under Airflow: the built-in ones (``openai``,
    ``google``, ``mock``) and those of ``lookup`` (default: ``[workflow_engine]
    llm_conn_ids``). Checked at DAG parse time and at ``run.create``."""
    from airflow_workflow_engine.ai.providers import ADAPTERS

    return sorted(set(ADAPTERS) | set(configured_conn_ids() if lookup is None else lookup))


def configured_run_max_cost() -> float | None:
    """``[workflow_engine] ai_run_max_cost``: the AI budget of each workflow run in USD
    (every workflow; empty: none). Stages' ``max_cost`` config caps single stages."""
    from airflow.sdk import conf

    raw = str(conf.get(CONFIG_SECTION, RUN_MAX_COST_OPTION, fallback="") or "").strip()
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


def _airflow_home() -> Path:
    return Path(os.path.expandvars(os.environ.get("AIRFLOW_HOME", "~/airflow"))).expanduser()


def default_mock_state_dir() -> str:
    """Where the ``mock`` provider keeps batches under Airflow (shared by every process)."""
    return str(_airflow_home() / "workflow_engine" / "mock_batches")


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


def _is_not_found(exc: BaseException) -> bool:
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, AirflowNotFoundException)


ConnectionGetter = Callable[[str], "Connection | None"]


def _get_connection(conn_id: str) -> Connection | None:
    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        if _is_not_found(exc):
            return None
        raise


@dataclass(frozen=True)
class ResolvedProvider:
    """Which connection a provider's credentials came from (for logs and tests)."""

    provider: str
    conn_id: str
    settings: ProviderSettings


def resolve_providers(
    lookup: Mapping[str, Sequence[str]] | None = None,
    get_connection: ConnectionGetter = _get_connection,
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
    get_connection: ConnectionGetter = _get_connection,
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


# -- the kernel's ai_factory under Airflow --------------------------------------------------


@dataclass(frozen=True)
class TaskLabels:
    """What labels a ledger row under Airflow: the DAG, its run and the task."""

    dag_id: str | None = None
    dag_run_id: str | None = None
    task_id: str | None = None


def _task_labels() -> TaskLabels:
    """The labels of the running Airflow task; empty outside one."""
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except Exception:  # no task context: the triggerer, a test, a script
        return TaskLabels()
    return TaskLabels(str(ti.dag_id), str(ti.run_id), str(ti.task_id))


class AirflowAIFactory:
    """The kernel's ``ai_factory`` under Airflow (one per kernel, so one per process).

    Builds each stage's ``ctx.ai`` with providers from Airflow connections and labels ledger
    rows with the Airflow DAG, DAG run and task. A provider's connections are read when one of
    its models is first used (a stage that only calls ``mock`` models reads none) and again
    after ``refresh_seconds`` (long-lived processes such as the triggerer pick up a changed
    key without a restart); SDK clients are kept while the settings stay the same (see
    :class:`~airflow_workflow_engine.hooks.llm_registry.ConnectionProviderRegistry`).
    ``providers`` (a mapping or registry) replaces the connection lookup (tests).
    """

    def __init__(
        self,
        ledger: Ledger,
        persistence: Persistence | None = None,
        *,
        providers: ProviderRegistry | Mapping[str, Any] | None = None,
        lookup: Mapping[str, Sequence[str]] | None = None,
        get_connection: ConnectionGetter = _get_connection,
        refresh_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self._persistence = persistence
        install_call_telemetry()  # AI calls in Airflow's metrics and traces too
        self._given = providers
        self._lookup = lookup
        self._get_connection = get_connection
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._registry: ProviderRegistry | None = None
        self._lock = threading.Lock()

    def registry(self) -> ProviderRegistry:
        """The providers: the given ones, or those of Airflow connections (read lazily)."""
        from airflow_workflow_engine.ai.settings import ProviderRegistry
        from airflow_workflow_engine.hooks.llm_registry import ConnectionProviderRegistry

        with self._lock:
            given = self._given
            if isinstance(given, ProviderRegistry):
                return given
            if self._registry is None:
                self._registry = (
                    ProviderRegistry(given)
                    if given is not None
                    else ConnectionProviderRegistry(
                        configured_conn_ids() if self._lookup is None else self._lookup,
                        self._get_connection,
                        refresh_seconds=self._refresh_seconds,
                        clock=self._clock,
                    )
                )
            return self._registry

    def model_providers(self) -> list[str]:
        """Providers model keys may name: the built-in ones and every provider with
        connections in ``[workflow_engine] llm_conn_ids`` (checked at ``run.create``)."""
        if self._given is not None:
            return self.registry().names
        return known_model_providers(self._lookup)

    def _labels_of_run(self, workflow_run_id: str) -> TaskLabels:
        """The DAG id and DAG run id in the run's idempotency key ``"<dag_id>/<run_id>"`` or
        ``"<dag_id>/<run_id>/<group_id>"`` (the triggerer has no task context)."""
        if self._persistence is None:
            return TaskLabels()
        try:
            run = self._persistence.get_run(workflow_run_id)
        except Exception:
            logger.debug("cannot read run %s for its DAG id", workflow_run_id, exc_info=True)
            return TaskLabels()
        key = getattr(run, "idempotency_key", None) or ""
        dag_id, sep, rest = key.partition("/")
        run_id = rest.partition("/")[0]  # a WorkflowTaskGroup's run: drop the group id
        return TaskLabels(dag_id, run_id) if sep and dag_id and run_id else TaskLabels()

    def factory_for(self, ctx: StageContext[Any, Any]) -> AIFactory:
        """A :func:`~airflow_workflow_engine.ai.context.make_ai_factory` factory labelled for
        the task running ``ctx``'s stage."""
        from airflow_workflow_engine.ai.context import make_ai_factory

        labels = _task_labels()
        if labels.dag_id is None:
            labels = self._labels_of_run(ctx.workflow_run_id)
        return make_ai_factory(
            self.ledger,
            providers=self.registry(),
            run_max_cost=self._run_max_cost(),
            dag_id=labels.dag_id,
            task_id=labels.task_id,
            dag_run_id=labels.dag_run_id,
        )

    def _run_max_cost(self) -> float | None:
        if self._given is not None:  # tests: no Airflow configuration involved
            return None
        return configured_run_max_cost()

    def __call__(self, ctx: StageContext[Any, Any]) -> AIHelper:
        return self.factory_for(ctx)(ctx)


# -- the hook (connection form, test button) -----------------------------------------------


class WorkflowEngineLLMHook(BaseHook):
    """A model provider's credentials for ``ctx.ai``, from a ``workflow_engine_llm``
    connection (or an ``openai`` / ``pydanticai`` one).

    :param llm_conn_id: the connection, e.g. ``llm_openai_default``.
    :param provider: the model-key prefix it serves; default: taken from an id of the form
        ``llm_<provider>_default``, else ``openai``.
    """

    conn_name_attr = "llm_conn_id"
    default_conn_name = "llm_openai_default"
    conn_type = LLM_CONN_TYPE
    hook_name = "Workflow Engine LLM"

    def __init__(
        self, llm_conn_id: str = "llm_openai_default", provider: str | None = None
    ) -> None:
        super().__init__()
        self.llm_conn_id = llm_conn_id
        self.provider = provider or _provider_of_conn_id(llm_conn_id)

    def get_provider_settings(self) -> ProviderSettings:
        """The connection's settings (raises when it does not exist or is set up wrongly)."""
        return provider_settings_from_connection(
            self.get_connection(self.llm_conn_id), self.provider
        )

    def get_conn(self) -> ProviderSettings:
        return self.get_provider_settings()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "port"],
            "relabeling": {"password": "API key", "host": "Base URL (optional)"},
            "placeholders": {
                "host": "https://api.openai.com/v1",
                "extra": '{"kind": "openai", "timeout": 60}',
            },
        }

    def test_connection(self) -> tuple[bool, str]:
        """Checks the settings and builds the SDK client; sends no request (nothing billed)."""
        try:
            settings = self.get_provider_settings()
            from airflow_workflow_engine.ai.settings import ProviderRegistry

            ProviderRegistry({self.provider: settings}).adapter(self.provider)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        where = f" at {settings.base_url}" if settings.base_url else ""
        return True, (
            f"Provider '{self.provider}' ({settings.kind or self.provider} API{where}) is "
            f"configured{' with an API key' if settings.api_key else ''}; no request was sent."
        )


def _provider_of_conn_id(conn_id: str) -> str:
    if conn_id.startswith("llm_") and conn_id.endswith("_default"):
        name = conn_id[len("llm_") : -len("_default")]
        if name:
            return name
    return "openai"
