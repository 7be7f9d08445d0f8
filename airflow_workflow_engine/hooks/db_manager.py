"""``WorkflowEngineDBManager``: ``airflow db migrate`` creates and upgrades the ``wfe_`` tables.

Airflow runs the DB managers that providers list under ``"db-managers"`` in
``get_provider_info()`` (as the ``edge3`` and ``fab`` providers do) after migrating its own
tables. This one applies the engine's own Alembic history
(``airflow_workflow_engine/persistence/sql/migrations``, version table
``wfe_alembic_version``, never Airflow's ``alembic_version``):

- in the engine's database, the one every process uses: the connection
  ``workflow_engine_default`` (wherever Airflow keeps it), else
  ``[workflow_engine] sql_alchemy_conn``. When that is Airflow's metadata database, on the
  migration's own connection, beside Airflow's tables;
- when neither is set, nowhere: tasks and triggers could not reach tables made in Airflow's
  database (Airflow 3 hides its URL from them), so the command says loudly what to set and
  leaves the engine's tables for the next ``airflow db migrate``. It does not fail: Airflow's
  own migration has succeeded, and a deployment that does not use the engine yet still starts.

Tables are always created by the migrations (never ``create_all``), so every database has
walked the same history.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.utils.db_manager import BaseDBManager
from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.engine import URL, make_url

from airflow_workflow_engine.persistence.sql.grants import quote
from airflow_workflow_engine.persistence.sql.migrate import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    downgrade,
    migrate,
    use_schema,
)
from airflow_workflow_engine.persistence.sql.tables import VERSION_TABLE, metadata

__all__ = ["WorkflowEngineDBManager"]

logger = logging.getLogger(__name__)


def _airflow_url() -> str:
    from airflow import settings

    return str(settings.SQL_ALCHEMY_CONN or "")


def _same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same database (driver, user and password aside: a
    least-privilege engine role on Airflow's database is still Airflow's database, whose
    owner creates the tables)."""
    from airflow_workflow_engine.persistence.sql.engine import normalize_url

    try:
        x, y = normalize_url(a), normalize_url(b)
    except Exception:
        return False
    if x.get_backend_name() != y.get_backend_name():
        return False
    if x.get_backend_name() == "sqlite":
        return _sqlite_path(x) == _sqlite_path(y)
    return (x.host, x.port or None, x.database) == (y.host, y.port or None, y.database)


def _sqlite_path(url: URL) -> str:
    return str(Path(url.database or "").expanduser().resolve())


def configured_engine_url() -> str | None:
    """The engine's database URL if one is configured, else ``None``."""
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.hooks.settings import (
        EngineNotConfiguredError,
        settings_from_config,
    )

    try:
        return WorkflowEngineHook().get_settings().sql_url
    except EngineNotConfiguredError:
        return None
    except Exception:
        # The connection could not be looked up (secrets backend down...): the option may do.
        logger.warning(
            "Could not read the '%s' connection; using [workflow_engine] sql_alchemy_conn",
            WorkflowEngineHook.default_conn_name,
            exc_info=True,
        )
        settings = settings_from_config()
        return settings.sql_url if settings else None


#: What ``airflow db migrate`` says when the engine has no database configured.
NOT_CONFIGURED_WARNING = (
    "The workflow engine has no database configured, so its wfe_ tables were NOT created. "
    "Stage tasks, the triggerer, the UI pages and `airflow workflow-engine` all need it. Set "
    "[workflow_engine] sql_alchemy_conn (environment variable "
    "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN), e.g. to Airflow's own database URL, or "
    "create the Airflow connection 'workflow_engine_default', then run `airflow db migrate` "
    "again."
)


class WorkflowEngineDBManager(BaseDBManager):
    """Creates, upgrades and drops the workflow engine's ``wfe_`` tables for ``airflow db``."""

    metadata: MetaData = metadata
    version_table_name = VERSION_TABLE
    migration_dir = MIGRATIONS_DIR.as_posix()
    alembic_file = (MIGRATIONS_DIR / "alembic.ini").as_posix()  # unused: config built in code
    supports_table_dropping = True
    revision_heads_map: dict[str, str] = {  # noqa: RUF012
        "0.1.0": "0001",
        "0.2.0": "0002",
        "0.3.0": "0003",
        "0.4.0": HEAD_REVISION,
    }

    # -- where ----------------------------------------------------------------------------
    def _configured_url(self) -> str | None:
        """The engine's database URL, ``None`` when nothing is configured (looked up once
        per manager: a connection lookup can take seconds)."""
        if not hasattr(self, "_configured"):
            self._configured: str | None = configured_engine_url()
        return self._configured

    def _schema(self) -> str | None:
        """The engine's own PostgreSQL schema, named by its URL's ``search_path``."""
        from airflow_workflow_engine.persistence.sql.engine import normalize_url
        from airflow_workflow_engine.persistence.sql.grants import search_path_schema

        url = self._configured_url()
        return search_path_schema(normalize_url(url)) if url else None

    def _separate_url(self) -> str | None:
        """The engine's own database URL when it is not Airflow's metadata database."""
        url = self._configured_url()
        return None if url is None or _same_database(url, _airflow_url()) else url

    def _warn_not_configured(self) -> None:
        banner = "*" * 100
        self.log.warning("\n%s\n%s\n%s", banner, NOT_CONFIGURED_WARNING, banner)

    def _describe(self, url: str | None) -> str:
        from airflow_workflow_engine.persistence.sql.engine import describe_url

        return describe_url(make_url(url)) if url else "Airflow's metadata database"

    # -- BaseDBManager --------------------------------------------------------------------
    def get_alembic_config(self) -> Any:
        return alembic_config(url=self._separate_url() or _airflow_url())

    def check_migration(self) -> bool:
        """Up to date, or nothing to check when the engine has no database configured."""
        if self._configured_url() is None:
            self._warn_not_configured()
            return True
        result: bool = super().check_migration()  # type: ignore[no-untyped-call]
        return result

    def get_current_revision(self) -> str | None:
        url = self._separate_url()
        if url is not None:
            return current_revision(url)
        from alembic.runtime.migration import MigrationContext

        context = MigrationContext.configure(
            self.session.connection(),
            opts={"version_table": VERSION_TABLE, "version_table_schema": self._schema()},
        )
        return context.get_current_revision()

    def create_db_from_orm(self) -> None:
        self.upgradedb()

    def initdb(self, use_migration_files: bool = False) -> None:
        del use_migration_files
        self.upgradedb()

    def upgradedb(
        self,
        to_revision: str | None = None,
        from_revision: str | None = None,
        show_sql_only: bool = False,
        use_migration_files: bool = False,
    ) -> None:
        del use_migration_files
        if self._configured_url() is None:
            self._warn_not_configured()
            return
        target = to_revision or "head"
        url = self._separate_url()
        if show_sql_only:
            self._offline("upgrade", f"{from_revision}:{target}" if from_revision else target, url)
            return
        self.log.info("Migrating the workflow engine's tables in %s", self._describe(url))
        if url is not None:
            migrate(url, target)
        else:
            self._on_session("upgrade", target)
        self.log.info(
            "The workflow engine's tables are at revision %s",
            HEAD_REVISION if target == "head" else target,
        )

    def downgrade(
        self, to_revision: str, from_revision: str | None = None, show_sql_only: bool = False
    ) -> None:
        if self._configured_url() is None:
            self._warn_not_configured()
            return
        url = self._separate_url()
        if show_sql_only:
            rev = f"{from_revision or HEAD_REVISION}:{to_revision}"
            self._offline("downgrade", rev, url)
            return
        self.log.info("Downgrading the workflow engine's tables in %s", self._describe(url))
        if url is not None:
            downgrade(url, to_revision)
        else:
            self._on_session("downgrade", to_revision)

    def drop_tables(self, connection: Connection) -> None:
        """Drops the engine's tables from the database Airflow is resetting (only there)."""
        schema = self._schema() if connection.dialect.name == "postgresql" else None
        present = set(inspect(connection).get_table_names(schema=schema))
        ours = [t for t in self.metadata.sorted_tables if t.name in present]
        prefix = f"{quote(schema)}." if schema else ""
        for table in reversed(ours):
            self.log.info("Dropping table %s%s", prefix, table.name)
            connection.execute(text(f"DROP TABLE {prefix}{quote(table.name)}"))
        if VERSION_TABLE in present:
            connection.execute(text(f"DROP TABLE {prefix}{VERSION_TABLE}"))
        url = self._separate_url()
        if url is not None:
            self.log.info(
                "The workflow engine's tables in %s are left alone: `airflow db reset` only "
                "resets Airflow's metadata database.",
                self._describe(url),
            )

    # -- helpers --------------------------------------------------------------------------
    def _on_session(self, direction: str, revision: str) -> None:
        """Runs the migration on Airflow's own session connection, then commits it."""
        from alembic import command

        self._release_metadata_locks_if_needed()
        connection = self.session.connection()
        # The engine's own schema, if its URL names one; SET LOCAL ends with the commit below.
        use_schema(connection, self._schema())
        config = alembic_config(connection)
        if direction == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        self.session.commit()

    def _offline(self, direction: str, revision: str, url: str | None) -> None:
        from alembic import command

        config = alembic_config(url=url or _airflow_url())
        if direction == "upgrade":
            command.upgrade(config, revision, sql=True)
        else:
            command.downgrade(config, revision, sql=True)
