"""Driving a backfill rerun (``host.backfill``): ``--max-active``, ``--wait``, resume after an
interruption through the state file, and the summary. The DAG runs are a small state machine
standing in for Airflow's scheduler: a cleared run is queued, then running, then ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_workflow_engine.host.backfill import (
    BackfillState,
    BackfillSummary,
    drive_backfill,
    state_file_path,
)


class Scheduler:
    """DAG runs that finish two polls after they are cleared; ``fails`` end failed."""

    def __init__(self, fails: set[str] = frozenset(), interrupt_at: str | None = None) -> None:
        self.fails = set(fails)
        self.interrupt_at = interrupt_at
        self.polls: dict[str, int] = {}
        self.cleared: list[str] = []
        self.max_in_flight = 0
        self.events: list[tuple[str, str]] = []

    def in_flight(self) -> int:
        return sum(1 for n in self.polls.values() if n < 2)

    def clear(self, run_id: str) -> str:
        if run_id == self.interrupt_at:
            raise KeyboardInterrupt
        self.cleared.append(run_id)
        self.polls[run_id] = 0
        self.max_in_flight = max(self.max_in_flight, self.in_flight())
        return "cleared 2 task(s); DAG run queued"

    def state(self, run_id: str) -> str | None:
        n = self.polls.get(run_id)
        if n is None:
            return "success"  # never cleared here: the old, finished run
        if n >= 2:
            return "failed" if run_id in self.fails else "success"
        self.polls[run_id] = n + 1
        return "queued" if n == 0 else "running"

    def drive(self, runs: list[str], state: BackfillState, **kw: object) -> BackfillSummary:
        return drive_backfill(
            runs,
            state=state,
            clear=self.clear,
            run_state=self.state,
            why_failed=lambda r: f"task(s) failed: summarize of {r}",
            on_event=lambda r, text: self.events.append((r, text)),
            sleep=lambda _s: None,
            poll_seconds=0,
            **kw,  # type: ignore[arg-type]
        )


RUNS = [f"r{i}" for i in range(1, 6)]


def test_max_active_bounds_the_runs_in_flight_and_wait_settles_all(tmp_path: Path) -> None:
    sched = Scheduler(fails={"r3"})
    state = BackfillState.load(tmp_path / "s.json")
    summary = sched.drive(RUNS, state, max_active=2, wait=True)
    assert sched.cleared == RUNS
    assert sched.max_in_flight == 2
    assert summary.rerun == ["r1", "r2", "r4", "r5"]
    assert summary.failed == [("r3", "task(s) failed: summarize of r3")]
    assert summary.running == []
    lines = summary.lines()
    assert lines[0] == "Summary: 4 rerun, 0 skipped, 1 failed."
    assert "  failed   r3: task(s) failed: summarize of r3" in lines
    assert BackfillState.load(state.path).runs == {
        "r1": "success",
        "r2": "success",
        "r3": "failed",
        "r4": "success",
        "r5": "success",
    }


def test_without_max_active_all_are_cleared_at_once(tmp_path: Path) -> None:
    sched = Scheduler()
    summary = sched.drive(
        RUNS, BackfillState.load(tmp_path / "s.json"), max_active=None, wait=False
    )
    assert sched.max_in_flight == 5
    assert summary.running == RUNS
    assert summary.lines()[0] == "Summary: 0 rerun, 0 skipped, 0 failed, 5 still running."


def test_resume_after_an_interruption_clears_only_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    first = Scheduler(interrupt_at="r4")
    with pytest.raises(KeyboardInterrupt):
        first.drive(RUNS, BackfillState.load(path), max_active=2, wait=True)
    saved = BackfillState.load(path).runs
    assert set(saved) == {"r1", "r2", "r3"}  # r3 was cleared; r4 was being cleared
    # The same command again: what was cleared is not cleared again, only waited for.
    again = Scheduler()
    again.polls = {r: first.polls[r] for r in first.polls}
    summary = again.drive(RUNS, BackfillState.load(path), max_active=2, wait=True)
    assert again.cleared == ["r4", "r5"]
    assert sorted(summary.rerun) == RUNS
    said = dict(again.events)
    assert any("already" in text for r, text in again.events if r in ("r1", "r2", "r3"))
    assert said["r5"].startswith("rerun finished")


def test_state_file_is_per_command(tmp_path: Path) -> None:
    a = state_file_path(tmp_path, "my dag", ("s", "2026-01-01", "2026-01-31", "downstream"))
    b = state_file_path(tmp_path, "my dag", ("s", "2026-01-01", "2026-01-31", "only"))
    assert a != b and a.parent == b.parent == tmp_path / "workflow_engine" / "backfill-rerun"
    assert a.name.startswith("my_dag-")
