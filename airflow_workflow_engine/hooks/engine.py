"""``WorkflowEngineHook``: where the engine's state lives under Airflow, and the kernel over it.

The hook owns the connection: it resolves the engine's settings (the connection first, then
the ``[workflow_engine]`` section; the rules are in :mod:`~airflow_workflow_engine.hooks.settings`)
and hands out the process's shared kernel for them
(:mod:`~airflow_workflow_engine.hooks.kernel_cache`). The names users import from here
(``DEFAULT_CONN_ID``, ``EngineSettings``, ``reset_kernel_cache``...) are re-exported from those
two modules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_workflow_engine.hooks.kernel_cache import (
    kernel_for,
    make_blob_store,
    reset_kernel_cache,
)
from airflow_workflow_engine.hooks.settings import (
    CONFIG_SECTION,
    CONN_TYPE,
    DEFAULT_CONN_ID,
    DEFAULT_OUTPUT_BLOB_THRESHOLD,
    EngineNotConfiguredError,
    EngineSettings,
    build_sql_url,
    get_connection,
    in_task_runtime,
    is_not_found,
    normalize_config_url,
    resolve_settings,
    settings_from_config,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.ports import WorkflowRegistry

__all__ = [
    "CONFIG_SECTION",
    "CONN_TYPE",
    "DEFAULT_CONN_ID",
    "DEFAULT_OUTPUT_BLOB_THRESHOLD",
    "EngineNotConfiguredError",
    "EngineSettings",
    "WorkflowEngineHook",
    "build_sql_url",
    "kernel_for",
    "normalize_config_url",
    "reset_kernel_cache",
    "settings_from_config",
]


class WorkflowEngineHook(BaseHook):
    """Builds the workflow engine's kernel from an Airflow connection or the config section.

    :param conn_id: the ``workflow_engine`` connection. When the default one
        (``workflow_engine_default``) does not exist, ``[workflow_engine] sql_alchemy_conn``
        is used; a missing non-default connection is an error. ``None``: the config section
        only (no connection lookup).
    """

    conn_name_attr = "conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Workflow Engine"

    def __init__(self, conn_id: str | None = DEFAULT_CONN_ID) -> None:
        super().__init__()
        self.conn_id = conn_id
        self._settings: EngineSettings | None = None

    # -- settings -------------------------------------------------------------------------
    def _lookup(self) -> tuple[Connection | None, BaseException | None]:
        if self.conn_id is None:
            return None, None
        try:
            return get_connection(self.conn_id), None
        except Exception as exc:
            if is_not_found(exc):
                return None, exc
            raise

    def get_settings(self) -> EngineSettings:
        """The resolved settings (the connection first, then ``[workflow_engine]``)."""
        if self._settings is None:
            conn, error = self._lookup()
            self._settings = resolve_settings(self.conn_id, conn, error)
        return self._settings

    async def aget_settings(self) -> EngineSettings:
        """:meth:`get_settings` for async code (the triggerer's event loop)."""
        if self._settings is None:
            conn: Connection | None = None
            error: BaseException | None = None
            if self.conn_id is not None:
                try:
                    if in_task_runtime():
                        conn = await self.aget_connection(self.conn_id)
                    else:
                        conn = get_connection(self.conn_id)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
                    error = exc
            self._settings = resolve_settings(self.conn_id, conn, error)
        return self._settings

    def get_sql_url(self) -> str:
        """The SQLAlchemy URL of the engine's tables (with the password: do not log it)."""
        return self.get_settings().sql_url

    # -- kernel ---------------------------------------------------------------------------
    def get_kernel(
        self,
        workflows: Workflow | WorkflowRegistry | Sequence[Workflow | WorkflowRegistry] = (),
    ) -> Kernel:
        """The kernel of this process for this hook's settings, with ``workflows`` (workflow
        objects or registries) registered. Built once per process; cheap afterwards."""
        return kernel_for(self.get_settings(), workflows)

    def get_conn(self) -> Kernel:
        return self.get_kernel()

    # -- Airflow UI -----------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {
                "host": "Database host (empty for SQLite)",
                "schema": "Database name, or SQLite file path",
                "login": "User",
            },
            "placeholders": {
                "host": "postgres.internal",
                "schema": "airflow   |   /opt/airflow/workflow_engine.db",
                "port": "5432",
                "extra": json.dumps(
                    {
                        "driver": "postgresql",
                        "blob_store": "s3://my-bucket/workflow-engine",
                        "blob_aws_conn_id": "aws_default",
                        "output_blob_threshold": DEFAULT_OUTPUT_BLOB_THRESHOLD,
                    },
                    indent=1,
                ),
            },
        }

    def test_connection(self) -> tuple[bool, str]:
        """Connects, checks the engine's tables are migrated and the blob store is usable."""
        try:
            settings = self.get_settings()
            from airflow_workflow_engine.persistence.sql import SqlPersistence

            with SqlPersistence(settings.sql_url) as store:
                store.check_schema()
            blobs = make_blob_store(settings)
            blobs.has("__workflow_engine_connection_test__")
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, (
            f"Connected to the {settings.describe_database()} (from {settings.source}); the "
            f"engine's tables are up to date; blob store: {settings.blob_store}."
        )
