"""Event plugins of the end-to-end tests (``[workflow_engine] event_plugins``).

- ``recorder`` appends every event it gets, as a JSON line, to
  ``$WFE_E2E_EVENTS_DIR/recorder.jsonl``;
- ``flaky`` does the same into ``flaky.jsonl`` for ``workflow:completed`` events, and fails
  while the file ``$WFE_E2E_EVENTS_DIR/flaky.broken`` exists (a webhook that is down).

Both run in the task processes of the workers (and in the CLI's process for ``events replay``):
files are what every process shares.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow_workflow_engine.kernel.plugins import define_plugin
from airflow_workflow_engine.kernel.records import OutboxEvent


def _folder() -> Path:
    return Path(os.environ["WFE_E2E_EVENTS_DIR"])


def _append(name: str, event: OutboxEvent) -> None:
    line = {
        "run": event.workflow_run_id,
        "sequence": event.sequence,
        "type": event.type,
        "pid": os.getpid(),
    }
    with (_folder() / name).open("a") as fh:
        fh.write(json.dumps(line) + "\n")


def _completed(event: OutboxEvent) -> None:
    if (_folder() / "flaky.broken").exists():
        raise ConnectionError("webhook down (flaky.broken exists)")
    _append("flaky.jsonl", event)


recorder = define_plugin(id="recorder", on={"*": lambda e: _append("recorder.jsonl", e)})
flaky = define_plugin(id="flaky", on={"workflow:completed": _completed})
