"""Statuses and approval values are spelled once: ``kernel.status.Status`` and
``conventions.Approval``. Everything else uses those names, never the string again (issue 10)."""

from __future__ import annotations

import ast
from pathlib import Path

from airflow_workflow_engine.conventions import Approval
from airflow_workflow_engine.kernel.status import Status

ROOT = Path(__file__).resolve().parents[2] / "airflow_workflow_engine"

STATUSES = frozenset(status.value for status in Status)
APPROVALS = frozenset({Approval.APPROVED, Approval.REJECTED})

#: Where each value is defined.
HOMES = {"kernel/status.py": STATUSES, "conventions.py": APPROVALS}

#: The same word that is no status: (module, value, why).
ALLOWED = {("cli/runs.py", "COMPLETED")}  # the column header of ``runs list``


def _respelled(path: Path) -> list[tuple[int, str]]:
    """String constants equal to a status or an approval value, outside f-strings (message
    text) and ``__all__`` (names, not values)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        in_all = isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        )
        if isinstance(node, ast.JoinedStr) or in_all:
            skip.update(id(child) for child in ast.walk(node))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in STATUSES | APPROVALS
        and id(node) not in skip
    ]


def test_statuses_and_approval_values_are_spelled_once() -> None:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for line, value in _respelled(path):
            if value in HOMES.get(name, ()) or (name, value) in ALLOWED:
                continue
            found.append(f"{name}:{line}: {value!r}")
    assert not found, (
        "use kernel.status.Status / conventions.Approval instead of the literal:\n"
        + "\n".join(found)
    )


def test_the_homes_define_every_value() -> None:
    for home, values in HOMES.items():
        spelled = {value for _, value in _respelled(ROOT / home)}
        assert spelled == values, home


def test_the_check_sees_a_respelled_status(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '__all__ = ["PENDING"]\nDONE = "COMPLETED"\nok = f"rejected {1}"\nv = "approved"\n',
        encoding="utf-8",
    )
    assert _respelled(module) == [(2, "COMPLETED"), (4, "approved")]
