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

This module holds the AI factory and the connection hook; the rules above (which
connections, what a connection holds, the configuration) are in
:mod:`~airflow_workflow_engine.hooks.llm_settings`, which imports no Airflow at module level.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_workflow_engine.hooks.llm_registry import ConnectionProviderRegistry
from airflow_workflow_engine.hooks.llm_settings import (
    LLM_CONN_TYPE,
    ConnectionGetter,
    configured_conn_ids,
    configured_run_max_cost,
    known_model_providers,
    provider_settings_from_connection,
)
from airflow_workflow_engine.hooks.settings import find_connection
from airflow_workflow_engine.hooks.telemetry import install_call_telemetry

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.context import AIFactory
    from airflow_workflow_engine.ai.helper import AIHelper
    from airflow_workflow_engine.ai.ledger import Ledger
    from airflow_workflow_engine.ai.settings import ProviderRegistry, ProviderSettings
    from airflow_workflow_engine.definitions.context import StageContext
    from airflow_workflow_engine.kernel.ports import Persistence

__all__ = ["AirflowAIFactory", "WorkflowEngineLLMHook"]

logger = logging.getLogger(__name__)


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
        get_connection: ConnectionGetter = find_connection,
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
