"""``ConnectionProviderRegistry``: AI providers whose settings come from Airflow connections,
looked up per provider when one of its models is first used.

Looking up a connection that does not exist costs a round trip to Airflow's API (seconds in
the triggerer), so a stage that only calls ``mock`` models must not look up the OpenAI and
Gemini connections. Each provider's connections are read on first use and again after
``refresh_seconds`` (the triggerer lives for days; keys get rotated); its adapter, and so its
SDK client, is kept while the settings stay the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from airflow_workflow_engine.ai.providers import ADAPTERS
from airflow_workflow_engine.ai.settings import ProviderRegistry, ProviderSettings
from airflow_workflow_engine.hooks.llm_settings import (
    default_mock_state_dir,
    provider_settings_from_connection,
)

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.models import ModelKey
    from airflow_workflow_engine.ai.providers.base import ProviderAdapter
    from airflow_workflow_engine.hooks.llm_settings import ConnectionGetter

__all__ = ["ConnectionProviderRegistry"]

logger = logging.getLogger(__name__)


class ConnectionProviderRegistry(ProviderRegistry):
    """A :class:`ProviderRegistry` that reads a provider's Airflow connections lazily.

    :param table: provider name -> connection ids in order (the first that exists wins).
    :param get_connection: returns a connection or ``None`` when it does not exist.
    """

    def __init__(
        self,
        table: Mapping[str, Sequence[str]],
        get_connection: ConnectionGetter,
        *,
        refresh_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        mock = ProviderSettings(options={"state_dir": default_mock_state_dir()})
        super().__init__({"mock": mock})
        self._table = {name: tuple(ids) for name, ids in table.items() if ids}
        self._get_connection = get_connection
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._read_at: dict[str, float] = {}
        self._from_connection: dict[str, str] = {}

    def parse(self, model: str) -> ModelKey:
        self._refresh(model.partition(":")[0])
        return super().parse(model)

    def adapter(self, provider: str) -> ProviderAdapter:
        self._refresh(provider)
        return super().adapter(provider)

    def _refresh(self, provider: str) -> None:
        """Reads ``provider``'s connections when it has some and they are due."""
        conn_ids = self._table.get(provider)
        if not conn_ids:
            return
        now = self._clock()
        last = self._read_at.get(provider)
        if last is not None and now - last < self._refresh_seconds:
            return
        found = self._lookup(provider, conn_ids)  # outside the lock: it may take a while
        with self._lock:
            self._read_at[provider] = now
            if found is None:
                if self._from_connection.pop(provider, None) is not None:
                    # The connection is gone: back to the SDK's defaults (environment).
                    self._replace(provider, ProviderSettings() if provider in ADAPTERS else None)
                return
            conn_id, settings = found
            if self._settings.get(provider) != settings:
                self._replace(provider, settings)
                logger.info("AI provider '%s' uses the Airflow connection '%s'", provider, conn_id)
            self._from_connection[provider] = conn_id

    def _lookup(
        self, provider: str, conn_ids: Sequence[str]
    ) -> tuple[str, ProviderSettings] | None:
        for conn_id in conn_ids:
            conn = self._get_connection(conn_id)
            if conn is None:
                continue
            settings = provider_settings_from_connection(conn, provider)
            if (settings.kind or provider) == "mock" and "state_dir" not in settings.options:
                options = {**settings.options, "state_dir": default_mock_state_dir()}
                settings = settings.model_copy(update={"options": options})
            return conn_id, settings
        return None

    def _replace(self, provider: str, settings: ProviderSettings | None) -> None:
        """New settings for ``provider`` (``None``: forget it); its adapter is rebuilt."""
        self._adapters.pop(provider, None)
        if settings is None:
            self._settings.pop(provider, None)
        else:
            self._settings[provider] = settings
