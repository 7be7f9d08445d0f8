"""The kernel under Airflow, built once per process and per settings, shared by every hook.

Each task process, the triggerer, the CLI and the UI build one kernel (and so one connection
pool) per :class:`~airflow_workflow_engine.hooks.settings.EngineSettings`, on first use:
operators and triggers of the same process share it. Its workflow registry is the process's
own: every workflow an operator or trigger passes in is added to it (the newest definition of
an id wins). ``reset_kernel_cache()`` closes the pools (tests, forks); a forked process
builds its own kernel (the cache is keyed by process id).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.hooks.settings import EngineNotConfiguredError, EngineSettings

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.ports import BlobStore, WorkflowRegistry

__all__ = ["kernel_for", "make_blob_store", "reset_kernel_cache"]


class _SharedRegistry:
    """The workflows a process has seen; the newest definition of an id wins."""

    def __init__(self) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._fallbacks: list[WorkflowRegistry] = []
        self._lock = threading.Lock()

    def add(self, item: Workflow | WorkflowRegistry) -> None:
        from airflow_workflow_engine.definitions.workflow import Workflow

        with self._lock:
            if isinstance(item, Workflow):
                self._workflows[item.id] = item
            elif item not in self._fallbacks:
                self._fallbacks.append(item)

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        found = self._workflows.get(workflow_id)
        if found is not None:
            return found
        for registry in list(self._fallbacks):
            found = registry.get_workflow(workflow_id)
            if found is not None:
                return found
        return None


@dataclass
class _Built:
    kernel: Kernel
    registry: _SharedRegistry


_cache_lock = threading.Lock()
_kernels: dict[tuple[int, EngineSettings], _Built] = {}


def reset_kernel_cache() -> None:
    """Forgets the cached kernels and closes their connection pools (tests, forks)."""
    with _cache_lock:
        built = list(_kernels.values())
        _kernels.clear()
    for item in built:
        _close(item.kernel)


def make_blob_store(settings: EngineSettings) -> BlobStore:
    """The blob store ``settings`` name: a local directory or ``s3://bucket/prefix``."""
    target = settings.blob_store
    if target.startswith("s3://"):
        from airflow_workflow_engine.blob.s3 import S3BlobStore

        bucket, _, prefix = target[len("s3://") :].partition("/")
        if not bucket:
            raise EngineNotConfiguredError(
                f"blob_store {target!r} ({settings.source}) names no bucket: use "
                "'s3://bucket/optional/prefix'."
            )
        client = _s3_client(settings.blob_aws_conn_id) if settings.blob_aws_conn_id else None
        return S3BlobStore(bucket, prefix, client=client)
    if "://" in target:
        raise EngineNotConfiguredError(
            f"blob_store {target!r} ({settings.source}) is neither a local path nor an "
            "'s3://bucket/prefix' URL."
        )
    from airflow_workflow_engine.blob.local import LocalBlobStore

    return LocalBlobStore(target)


def _s3_client(aws_conn_id: str) -> Any:
    try:
        s3_hooks = importlib.import_module("airflow.providers.amazon.aws.hooks.s3")
    except ImportError:
        raise EngineNotConfiguredError(
            f"blob_aws_conn_id is '{aws_conn_id}', which needs the Amazon provider: install "
            "apache-airflow-providers-amazon, or unset blob_aws_conn_id to use boto3's default "
            "credentials (environment, profile or instance role)."
        ) from None
    return s3_hooks.S3Hook(aws_conn_id=aws_conn_id).get_conn()


def _build(settings: EngineSettings) -> _Built:
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.hooks.events import event_sink_from_config
    from airflow_workflow_engine.hooks.llm import AirflowAIFactory
    from airflow_workflow_engine.host.ports import AirflowJobTransport, AirflowScheduler
    from airflow_workflow_engine.kernel.kernel import KernelSettings, create_kernel
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    try:
        persistence = SqlPersistence(settings.sql_url)
    except Exception as exc:  # a malformed URL or a missing driver
        raise EngineNotConfiguredError(
            f"Cannot use the workflow engine database from {settings.source}: {exc}"
        ) from exc
    # No schema check here (it costs an Alembic import per task process): a missing or
    # outdated wfe_ table surfaces as MigrationsNotAppliedError naming `airflow db migrate`
    # on first use; test_connection() checks the revision explicitly.
    registry = _SharedRegistry()
    # ctx.ai: credentials from Airflow connections (hooks/llm.py), one ledger row per model
    # call in wfe_ai_calls of the same database (sharing the pool), labelled with the DAG id,
    # task id, workflow run id and try number; stage metrics and run totals roll up from it.
    ledger = SqlLedger(persistence.engine)
    kernel = create_kernel(
        persistence=persistence,
        blob_store=make_blob_store(settings),
        job_transport=AirflowJobTransport(),
        event_sink=event_sink_from_config(),  # [workflow_engine] event_plugins
        scheduler=AirflowScheduler(),
        registry=registry,
        settings=KernelSettings(output_blob_threshold=settings.output_blob_threshold),
        ledger=ledger,
        ai_factory=AirflowAIFactory(ledger, persistence),
    )
    return _Built(kernel, registry)


def kernel_for(
    settings: EngineSettings,
    workflows: Workflow | WorkflowRegistry | Iterable[Workflow | WorkflowRegistry] = (),
) -> Kernel:
    """The process's kernel for ``settings`` (built on first use), knowing ``workflows``."""
    key = (os.getpid(), settings)
    with _cache_lock:
        built = _kernels.get(key)
    if built is None:
        fresh = _build(settings)
        with _cache_lock:
            built = _kernels.setdefault(key, fresh)
        if built is not fresh:
            _close(fresh.kernel)
    for item in _as_items(workflows):
        built.registry.add(item)
    return built.kernel


def _as_items(
    workflows: Workflow | WorkflowRegistry | Iterable[Workflow | WorkflowRegistry],
) -> list[Workflow | WorkflowRegistry]:
    from airflow_workflow_engine.definitions.workflow import Workflow

    if isinstance(workflows, Workflow) or hasattr(workflows, "get_workflow"):
        return [workflows]  # type: ignore[list-item]
    return list(workflows)


def _close(kernel: Kernel) -> None:
    close = getattr(kernel.persistence, "close", None)
    if callable(close):
        close()
