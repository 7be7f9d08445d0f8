"""Driving a backfill rerun: at most ``max_active`` DAG runs rerunning at once, a state file
that makes the same command resume where it stopped, and a summary. No ``airflow`` import:
the CLI passes how to clear a DAG run and how to read its state.

Resume: the state file keeps, per DAG run, whether this backfill cleared it and how it ended.
Running the same command again (same DAG, stage, dates and ``--only``) clears only the DAG runs
that the file does not list as cleared, and, with ``--wait``, waits again for those still
running.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FINISHED_STATES",
    "BackfillState",
    "BackfillSummary",
    "drive_backfill",
    "state_file_path",
]

#: DAG run states after which a rerun is over.
FINISHED_STATES = frozenset({"success", "failed"})


def state_file_path(home: Path, dag_id: str, key: Sequence[str]) -> Path:
    """``<home>/workflow_engine/backfill-rerun/<dag_id>-<hash of the arguments>.json``."""
    digest = hashlib.sha256(json.dumps([dag_id, *key]).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dag_id)
    return home / "workflow_engine" / "backfill-rerun" / f"{safe}-{digest}.json"


@dataclass
class BackfillState:
    """What a backfill did so far, kept in a JSON file after every change."""

    path: Path
    #: ``{run_id: "cleared" | "success" | "failed"}``
    runs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> BackfillState:
        if not path.is_file():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(path, {str(k): str(v) for k, v in data.get("runs", {}).items()})

    def mark(self, run_id: str, state: str) -> None:
        self.runs[run_id] = state
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runs": self.runs}, indent=2), encoding="utf-8")
        os.replace(tmp, self.path)  # atomic: an interruption leaves the old or the new file


@dataclass
class BackfillSummary:
    """How a backfill ended: per DAG run, why."""

    rerun: list[str] = field(default_factory=list)
    #: ``(run_id, why)``
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Cleared but not waited for (no ``--wait``): still running when the command ended.
    running: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"Summary: {len(self.rerun)} rerun, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed"
            + (f", {len(self.running)} still running" if self.running else "")
            + "."
        ]
        out += [f"  rerun    {r}" for r in self.rerun]
        out += [f"  running  {r}" for r in self.running]
        out += [f"  skipped  {r}: {why}" for r, why in self.skipped]
        out += [f"  failed   {r}: {why}" for r, why in self.failed]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "rerun": self.rerun,
            "running": self.running,
            "skipped": [{"run_id": r, "reason": why} for r, why in self.skipped],
            "failed": [{"run_id": r, "reason": why} for r, why in self.failed],
        }


def drive_backfill(
    todo: Sequence[str],
    *,
    state: BackfillState,
    clear: Callable[[str], str],
    run_state: Callable[[str], str | None],
    why_failed: Callable[[str], str],
    max_active: int | None,
    wait: bool,
    on_event: Callable[[str, str], None],
    poll_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillSummary:
    """Clears the DAG runs of ``todo`` in order, at most ``max_active`` in flight (cleared and
    not finished), waiting for the last ones when ``wait``.

    ``clear(run_id)`` clears one run and returns a line saying what; ``run_state`` reads a DAG
    run's state; ``why_failed`` says why a failed run failed; ``on_event(run_id, text)`` reports
    each step (the CLI advances its progress bar). Runs that ``state`` already lists as
    cleared are not cleared again: they are waited for (when not finished) or counted.
    """
    summary = BackfillSummary()
    in_flight: list[str] = []

    def settle(run_id: str, current: str | None) -> None:
        if current == "failed":
            why = why_failed(run_id)
            summary.failed.append((run_id, why))
            on_event(run_id, f"failed: {why}")
        else:
            summary.rerun.append(run_id)
            on_event(run_id, f"rerun finished ({current})")
        state.mark(run_id, str(current))

    def reap(block_until: int) -> None:
        """Waits until at most ``block_until`` runs are in flight."""
        while True:
            for run_id in list(in_flight):
                current = run_state(run_id)
                if current in FINISHED_STATES:
                    in_flight.remove(run_id)
                    settle(run_id, current)
            if len(in_flight) <= block_until:
                return
            sleep(poll_seconds)

    for run_id in todo:
        before = state.runs.get(run_id)
        if before in FINISHED_STATES:
            _count_earlier(summary, run_id, before, why_failed)
            on_event(run_id, f"already rerun by this backfill ({before})")
            continue
        if before == "cleared":
            on_event(run_id, "already cleared by this backfill, not cleared again")
        else:
            if max_active is not None:
                reap(max_active - 1)
            said = clear(run_id)
            state.mark(run_id, "cleared")
            on_event(run_id, said)
        in_flight.append(run_id)
    reap(0 if wait else len(in_flight))
    summary.running.extend(in_flight)
    return summary


def _count_earlier(
    summary: BackfillSummary, run_id: str, before: str, why_failed: Callable[[str], str]
) -> None:
    """A run that an earlier, interrupted invocation of this backfill saw finish."""
    if before == "failed":
        summary.failed.append((run_id, f"{why_failed(run_id)} (before the resume)"))
    else:
        summary.rerun.append(run_id)
