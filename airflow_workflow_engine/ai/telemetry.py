"""Who else hears about a model call once its ledger row is written: metrics and traces.

The ledger is the record of what was spent; observers only report it elsewhere (under
Airflow: Airflow's metrics and an OpenTelemetry span per call, see
``hooks/telemetry.py``). They are told after the row is written, and an observer that fails
is logged and skipped, so reporting can never cost a ledger row or fail a paid call.

No Airflow import here: the host registers its observers at start-up.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.ledger import LedgerEntry

__all__ = ["CallObserver", "add_call_observer", "call_observers", "remove_call_observer"]

logger = logging.getLogger("airflow_workflow_engine.ai")


class CallObserver(Protocol):
    """Told about every ledger row this process writes (one per call that reached a provider)."""

    def call_recorded(self, entry: LedgerEntry) -> None: ...


class _Observers:
    """The process's observers; readers take the current tuple without a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: tuple[CallObserver, ...] = ()


_registry = _Observers()


def add_call_observer(observer: CallObserver) -> None:
    """Registers ``observer`` for this process; adding the same one twice is a no-op."""
    with _registry.lock:
        if observer not in _registry.current:
            _registry.current = (*_registry.current, observer)


def remove_call_observer(observer: CallObserver) -> None:
    with _registry.lock:
        _registry.current = tuple(o for o in _registry.current if o != observer)


def call_observers() -> tuple[CallObserver, ...]:
    return _registry.current


def notify_call_recorded(entry: LedgerEntry) -> None:
    """Tells every observer; never raises (the call was made and its row is written)."""
    for observer in _registry.current:
        try:
            observer.call_recorded(entry)
        except Exception:
            logger.warning(
                "AI call observer %r failed for ledger row %s", observer, entry.id, exc_info=True
            )
